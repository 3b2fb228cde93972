/* status.h - the project's one status enum and the thread-local error detail.
 *
 * Every fallible call returns an mg_status. MG_OK is zero; codes are appended, never renumbered.
 * The detail of the last failure on this thread (file, line, message) is kept in a thread-local
 * record that the caller may read with mg_err_msg() or log; mg_err_set() overwrites it. */
#ifndef MG_STATUS_H
#define MG_STATUS_H

typedef enum mg_status {
    MG_OK = 0,
    MG_ERR = 1,         /* unspecified failure */
    MG_EINVAL = 2,      /* bad argument or input */
    MG_ENOMEM = 3,      /* allocation failed */
    MG_EIO = 4,         /* file or socket I/O failed */
    MG_ENOTFOUND = 5,   /* key, file, tensor or instance absent */
    MG_ETIMEOUT = 6,    /* deadline passed */
    MG_ECLOSED = 7,     /* connection or object closed */
    MG_EPROTO = 8,      /* peer spoke something we cannot parse */
    MG_EFULL = 9,       /* capacity exhausted (KV blocks, queue) */
    MG_ECANCELED = 10,  /* cancelled by the caller */
    MG_EUNAVAIL = 11,   /* no server or worker available */
    MG_EFORMAT = 12,    /* malformed file (checkpoint, config) */
    MG_EGAP = 13,       /* stream lost a message (sequence gap) */
    MG_EEXIST = 14,     /* already exists */
    MG_ECUDA = 15,      /* CUDA or NCCL failure */
    MG_EUNSUPPORTED = 16,
} mg_status;

const char *mg_status_str(mg_status s);

/* Record the error detail for this thread and return s, so that callers can write
 * `return MG_ERRF(MG_EINVAL, "field %s: ...", name);`. */
mg_status mg_err_set(mg_status s, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define MG_ERRF(s, ...) mg_err_set((s), __FILE__, __LINE__, __VA_ARGS__)

/* The last message recorded on this thread ("" when none). Valid until the next mg_err_set. */
const char *mg_err_msg(void);
const char *mg_err_file(void);
int mg_err_line(void);
mg_status mg_err_status(void);
void mg_err_clear(void);

#endif
