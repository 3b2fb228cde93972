/* log.c - text and JSON-lines log records, written with one write(2) each. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

mg_log_level mg_log_min = MG_LOG_INFO;

static char component[32] = "magneto";
static int rank = -1;
static bool json;
static int out_fd = 2;

static const char *const level_names[] = {"trace", "debug", "info", "warn", "error", "off"};

bool mg_log_level_parse(const char *name, mg_log_level *out) {
    for (int i = 0; i <= MG_LOG_OFF; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (mg_log_level)i;
            return true;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *out = MG_LOG_WARN;
        return true;
    }
    return false;
}

void mg_log_init(const char *comp, int r) {
    if (comp) snprintf(component, sizeof(component), "%s", comp);
    rank = r;
    const char *lv = getenv("MAGNETO_LOG_LEVEL");
    mg_log_level l;
    if (lv && mg_log_level_parse(lv, &l)) mg_log_min = l;
    const char *fmt = getenv("MAGNETO_LOG_FORMAT");
    if (fmt) json = strcasecmp(fmt, "json") == 0;
}

void mg_log_set_level(mg_log_level level) {
    mg_log_min = level;
}
void mg_log_set_json(bool j) {
    json = j;
}
void mg_log_set_fd(int fd) {
    out_fd = fd;
}

/* Append s to buf as the body of a JSON string (no quotes). Returns the new length. */
static size_t json_escape(char *buf, size_t len, size_t cap, const char *s) {
    for (; *s && len + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)c;
        } else if (c == '\n') {
            buf[len++] = '\\';
            buf[len++] = 'n';
        } else if (c < 0x20) {
            len += (size_t)snprintf(buf + len, cap - len, "\\u%04x", c);
        } else {
            buf[len++] = (char)c;
        }
    }
    return len;
}

/* snprintf returns what it wanted to write; keep n inside buf so that the next append's size
 * (cap - n) cannot wrap around. */
static size_t clamp_len(size_t n, size_t cap) {
    return n < cap ? n : cap - 1;
}

void mg_log_write(mg_log_level level, const char *file, int line, const char *rid, const char *fmt,
                  ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t wl = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + wl, sizeof(when) - wl, ".%06ldZ", ts.tv_nsec / 1000);

    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    char buf[4096];
    size_t n;
    if (json) {
        n = (size_t)snprintf(buf, sizeof(buf),
                             "{\"time\":\"%s\",\"level\":\"%s\",\"component\":\"%s\",\"rank\":%d,",
                             when, level_names[level], component, rank);
        n = clamp_len(n, sizeof(buf));
        if (rid) {
            n = clamp_len(n + (size_t)snprintf(buf + n, sizeof(buf) - n, "\"request_id\":\""),
                          sizeof(buf));
            /* Request ids come from clients: at most 256 bytes of one, so the message fits. */
            n = json_escape(buf, n, n + 256 < sizeof(buf) ? n + 256 : sizeof(buf), rid);
            n = clamp_len(n + (size_t)snprintf(buf + n, sizeof(buf) - n, "\","), sizeof(buf));
        }
        n = clamp_len(n + (size_t)snprintf(buf + n, sizeof(buf) - n, "\"src\":\"%s:%d\",\"msg\":\"",
                                           base, line),
                      sizeof(buf));
        n = json_escape(buf, n, sizeof(buf) - 3, msg);
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\"}\n");
    } else {
        char rk[16] = "";
        if (rank >= 0) snprintf(rk, sizeof(rk), "[%d]", rank);
        n = (size_t)snprintf(buf, sizeof(buf), "%s %-5s %s%s %s%s%s%s:%d %s\n", when,
                             level_names[level], component, rk, rid ? "req=" : "", rid ? rid : "",
                             rid ? " " : "", base, line, msg);
    }
    if (n >= sizeof(buf)) {
        n = sizeof(buf) - 1;
        buf[n - 1] = '\n';
    }
    ssize_t w = write(out_fd, buf, n);
    (void)w;
}
