list(APPEND MG_RUNTIME_SOURCES metrics.c sysserver.c)
list(APPEND MG_RUNTIME_SOURCES etcd.c discovery.c)
list(APPEND MG_RUNTIME_SOURCES bus.c)
