/* spawn.h - start and stop real nats-server and etcd processes for integration tests.
 *
 * A test that must stop, kill or restart a server starts its own with these helpers instead of
 * using the shared ones of tests/run.sh. Each server listens on a free loopback port (found by
 * binding port 0) and keeps that port, and etcd its data dir, across spawn_restart, so clients
 * can reconnect to the same URL. A start returns only once the server answers: nats-server
 * accepts TCP, etcd reports {"health":"true"} on /health (it has elected itself leader).
 *
 * Server output goes to a log file (spawn_srv.log) so a failing test can point at it. Children
 * get SIGKILL if the test process dies, so a crashed test leaves no server behind; at exit, servers
 * not cleaned up are killed and their log and temporary data dir removed (MG_SPAWN_KEEP_LOGS=1
 * keeps the logs).
 * Server calls are not thread-safe: call them from the test's main thread (the one that started
 * the server). */
#ifndef MG_TEST_SPAWN_H
#define MG_TEST_SPAWN_H

#include <stdbool.h>
#include <sys/types.h>

typedef enum spawn_kind { SPAWN_NATS = 1, SPAWN_ETCD = 2 } spawn_kind;

typedef struct spawn_srv {
    spawn_kind kind;
    pid_t pid;         /* 0 when not running */
    int port;          /* client port, kept across restarts */
    int peer_port;     /* etcd peer port, kept across restarts */
    char url[64];      /* "nats://127.0.0.1:P" or "http://127.0.0.1:P" */
    char datadir[512]; /* etcd data dir */
    char log[576];     /* server stdout+stderr, appended across restarts */
    bool own_datadir;  /* datadir was created by spawn_etcd and is removed by spawn_cleanup */
} spawn_srv;

/* Start nats-server on a free loopback port. Returns 0, or -1 with a message on stderr. */
int spawn_nats(spawn_srv *s);
/* Start a single-member etcd on free loopback ports. datadir NULL: a fresh temporary dir, removed
 * by spawn_cleanup. Returns 0, or -1 with a message on stderr. */
int spawn_etcd(spawn_srv *s, const char *datadir);
/* SIGTERM and wait for exit (SIGKILL after 10 s). Returns 0, -1 when it was not running. */
int spawn_stop(spawn_srv *s);
/* SIGKILL and wait. Returns 0, -1 when it was not running. */
int spawn_kill(spawn_srv *s);
/* Start again on the same port(s) and data dir (stops it first if running). Returns 0 or -1. */
int spawn_restart(spawn_srv *s);
/* Stop if running, then remove the log and a data dir that spawn_etcd created. */
void spawn_cleanup(spawn_srv *s);

/* A TCP proxy on a free loopback port in front of 127.0.0.1:target_port, on a thread of its own,
 * to cut a client off from a server that stays up (a partition): while blocked, it closes every
 * connection it carries and closes new ones at once. Thread-safe. */
typedef struct spawn_proxy spawn_proxy;
spawn_proxy *spawn_proxy_start(int target_port); /* NULL with a message on stderr */
int spawn_proxy_port(const spawn_proxy *p);
const char *spawn_proxy_url(const spawn_proxy *p); /* "http://127.0.0.1:P" */
void spawn_proxy_block(spawn_proxy *p, bool blocked);
void spawn_proxy_stop(spawn_proxy *p); /* NULL is accepted */

/* A free TCP port on 127.0.0.1 (bind port 0, read it back, close), or -1. */
int spawn_free_port(void);
/* Wait until 127.0.0.1:port accepts a TCP connection; false after timeout_ms. */
bool spawn_wait_port(int port, int timeout_ms);

#endif
