/* runtime_version.c - the runtime library version string. */
const char *mg_runtime_version(void) { return "0.1.0"; }
