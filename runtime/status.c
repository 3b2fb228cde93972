/* status.c - status names and the thread-local error record. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const names[] = {
    [MG_OK] = "ok",
    [MG_ERR] = "error",
    [MG_EINVAL] = "invalid argument",
    [MG_ENOMEM] = "out of memory",
    [MG_EIO] = "I/O error",
    [MG_ENOTFOUND] = "not found",
    [MG_ETIMEOUT] = "timed out",
    [MG_ECLOSED] = "closed",
    [MG_EPROTO] = "protocol error",
    [MG_EFULL] = "capacity exhausted",
    [MG_ECANCELED] = "cancelled",
    [MG_EUNAVAIL] = "unavailable",
    [MG_EFORMAT] = "malformed file",
    [MG_EGAP] = "sequence gap",
    [MG_EEXIST] = "already exists",
    [MG_ECUDA] = "CUDA/NCCL error",
    [MG_EUNSUPPORTED] = "unsupported",
};

const char *mg_status_str(mg_status s) {
    if ((unsigned)s < sizeof(names) / sizeof(names[0]) && names[s]) return names[s];
    return "unknown status";
}

static _Thread_local struct {
    mg_status status;
    const char *file;
    int line;
    char msg[512];
} err;

mg_status mg_err_set(mg_status s, const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.msg, sizeof(err.msg), fmt, ap);
    va_end(ap);
    err.status = s;
    err.file = file;
    err.line = line;
    return s;
}

const char *mg_err_msg(void) {
    return err.msg;
}
const char *mg_err_file(void) {
    return err.file ? err.file : "";
}
int mg_err_line(void) {
    return err.line;
}
mg_status mg_err_status(void) {
    return err.status;
}
void mg_err_clear(void) {
    err.status = MG_OK;
    err.file = NULL;
    err.line = 0;
    err.msg[0] = 0;
}
