list(APPEND MG_RUNTIME_SOURCES runtime_version.c)
