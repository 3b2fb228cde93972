/* sysserver.h - the small HTTP endpoint every process (frontend, router, worker) runs beside its
 * real work, for Prometheus and for orchestrators' probes.
 *
 *   GET /metrics  the registry in text format 0.0.4 (Content-Type MG_METRICS_CONTENT_TYPE)
 *   GET /health   JSON {"status":"healthy"|"unhealthy","component":...,"uptime_seconds":...,
 *                 "details":{...}}; 200 when healthy, 503 when not. The component's health
 *                 callback decides and fills "details"; without one the process counts as healthy.
 *   GET /live     200 {"status":"alive"} while the process loop beats (sysserver_heartbeat) within
 *                 live_timeout_ms, else 503 {"status":"stalled"}; always 200 when live_timeout_ms
 *                 is 0.
 * Anything else is 404; methods other than GET and HEAD are 405.
 *
 * Built on libmicrohttpd with its own internal thread(s): requests are answered off the
 * component's threads, so callbacks (health, gauge functions, scrape hooks) run on a server
 * thread and must be thread-safe. Keep them quick: one server thread (the default) answers one
 * request at a time, so a slow health check also delays /live. */
#ifndef MG_SYSSERVER_H
#define MG_SYSSERVER_H

#include <stdbool.h>

#include <jansson.h>

#include "config.h"
#include "metrics.h"
#include "status.h"

typedef struct sysserver sysserver;

/* Two rows for a binary's config table (config.h), so that every process takes the same flags:
 * --system-host / MAGNETO_SYSTEM_HOST (char **host_dst) and --system-port / MAGNETO_SYSTEM_PORT
 * (int64_t *port_dst; def_port is text, e.g. "8081", or "0" for a free port). */
/* clang-format off */
#define SYSSERVER_CFG_ROWS(host_dst, port_dst, def_port)                                           \
    {"system-host", MG_CFG_STR, (host_dst), "0.0.0.0", 1, 0,                                      \
     "address of the /metrics, /health and /live endpoint", NULL},                                \
    {"system-port", MG_CFG_INT, (port_dst), (def_port), 0, 65535,                                  \
     "port of the /metrics, /health and /live endpoint (0 picks a free one)", NULL}
/* clang-format on */

typedef struct sysserver_opts {
    const char *host;      /* address to bind; NULL means "0.0.0.0" (tests use "127.0.0.1") */
    int port;              /* 0 picks a free port: read it back with sysserver_port() */
    mg_registry *registry; /* rendered on /metrics; NULL means metrics_default() */
    const char *component; /* "frontend", "router", "worker"; shown on /health; may be NULL */
    int threads;           /* server threads; 0 means 1 */
    int live_timeout_ms;   /* /live fails when the last heartbeat is older; 0 disables the check */
} sysserver_opts;

/* Health callback: return true when healthy. details is an empty JSON object the callback may
 * add keys to (it is reported under "details"); it keeps no reference to it. Runs on a server
 * thread. */
typedef bool (*sysserver_health_fn)(void *arg, json_t *details);

/* Bind, listen and start serving. opts is copied (strings too); the registry must outlive the
 * server. On success *out is running and sysserver_port() tells the bound port. */
mg_status sysserver_start(const sysserver_opts *opts, sysserver **out);
/* Stop serving (waits for requests in flight) and free. Accepts NULL. */
void sysserver_stop(sysserver *s);

/* The bound TCP port (the chosen one when opts.port was 0). */
int sysserver_port(const sysserver *s);

/* Set or replace the health callback; fn NULL means always healthy. arg must stay valid until it
 * is replaced or the server stopped. Any thread. */
void sysserver_set_health(sysserver *s, sysserver_health_fn fn, void *arg);

/* Tell the server the process loop is alive (cheap: one atomic store; call it every loop turn or
 * step). Any thread. */
void sysserver_heartbeat(sysserver *s);

#endif
