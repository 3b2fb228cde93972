/* log.h - leveled logging for every process: one line per record, text or JSON.
 *
 * A record carries the time, level, component (set once per process), rank (-1 when none), an
 * optional request id, the source location and the message. The level is checked in the macro,
 * before any argument is formatted, so disabled debug lines cost one comparison.
 * Thread-safe: each record is formatted into a local buffer and written with one write(2). */
#ifndef MG_LOG_H
#define MG_LOG_H

#include <stdbool.h>

typedef enum mg_log_level {
    MG_LOG_TRACE = 0,
    MG_LOG_DEBUG = 1,
    MG_LOG_INFO = 2,
    MG_LOG_WARN = 3,
    MG_LOG_ERROR = 4,
    MG_LOG_OFF = 5,
} mg_log_level;

extern mg_log_level mg_log_min; /* records below this level are dropped */

/* Set the component name and rank; read MAGNETO_LOG_LEVEL (trace|debug|info|warn|error|off) and
 * MAGNETO_LOG_FORMAT (text|json) from the environment. The component string is copied. */
void mg_log_init(const char *component, int rank);
void mg_log_set_level(mg_log_level level);
void mg_log_set_json(bool json);
void mg_log_set_fd(int fd); /* default 2 (stderr) */
/* Parse "info", "WARN", ... ; returns false when the name is unknown. */
bool mg_log_level_parse(const char *name, mg_log_level *out);

void mg_log_write(mg_log_level level, const char *file, int line, const char *request_id,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define MG_LOGR(level, rid, ...)                                                                   \
    do {                                                                                           \
        if ((level) >= mg_log_min) mg_log_write((level), __FILE__, __LINE__, (rid), __VA_ARGS__);  \
    } while (0)
#define MG_TRACE(...) MG_LOGR(MG_LOG_TRACE, NULL, __VA_ARGS__)
#define MG_DEBUG(...) MG_LOGR(MG_LOG_DEBUG, NULL, __VA_ARGS__)
#define MG_INFO(...)  MG_LOGR(MG_LOG_INFO, NULL, __VA_ARGS__)
#define MG_WARN(...)  MG_LOGR(MG_LOG_WARN, NULL, __VA_ARGS__)
#define MG_ERROR(...) MG_LOGR(MG_LOG_ERROR, NULL, __VA_ARGS__)

/* Log the calling thread's last error (mg_err_msg) at ERROR level with a prefix. */
#define MG_LOG_ERR(what)                                                                           \
    MG_ERROR("%s: %s (%s:%d)", (what), mg_err_msg(), mg_err_file(), mg_err_line())

#endif
