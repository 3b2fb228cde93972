/* spawn.c - start, stop, kill and restart nats-server and etcd for integration tests.
 *
 * fork + exec with the argv built before fork (only async-signal-safe calls in the child). A
 * start polls until the server answers, and fails early if the child exits first (a port taken
 * between our probe and the server's bind shows up that way). The proxy simulates a partition
 * between a client and a server that stays up. */
#include "spawn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int spawn_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int connect_port(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

bool spawn_wait_port(int port, int timeout_ms) {
    long long end = now_ms() + timeout_ms;
    for (;;) {
        int fd = connect_port(port);
        if (fd >= 0) {
            close(fd);
            return true;
        }
        if (now_ms() >= end) return false;
        sleep_ms(50);
    }
}

/* etcd accepts TCP before it has elected itself leader; /health says true only after that. */
static bool etcd_healthy(int port) {
    int fd = connect_port(port);
    if (fd < 0) return false;
    static const char req[] = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    char buf[1024];
    size_t got = 0;
    if (write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
        ssize_t n;
        while (got < sizeof buf - 1 && (n = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
            got += (size_t)n;
    }
    close(fd);
    buf[got] = 0;
    return strstr(buf, "\"health\":\"true\"") != NULL;
}

/* Servers still registered when the test process exits (a test that returned early or forgot
 * spawn_cleanup) are killed and their temporary files removed, so runs leave nothing behind.
 * Entries are copies keyed by port, since a spawn_srv may live on a stack that is gone by then. */
typedef struct reg_ent {
    bool used, own;
    int port;
    pid_t pid;
    char datadir[512];
    char log[576];
} reg_ent;
static reg_ent reg[32];
static pid_t reg_owner;

static void remove_tree(const char *path);

static void reg_at_exit(void) {
    if (getpid() != reg_owner) return; /* a forked child exiting: the servers are not its own */
    for (int i = 0; i < 32; i++) {
        if (!reg[i].used) continue;
        if (reg[i].pid > 0) {
            kill(reg[i].pid, SIGKILL);
            waitpid(reg[i].pid, NULL, 0);
        }
        if (!getenv("MG_SPAWN_KEEP_LOGS")) unlink(reg[i].log);
        if (reg[i].own) remove_tree(reg[i].datadir);
    }
}

static void reg_update(const spawn_srv *s) {
    int free_slot = -1;
    for (int i = 0; i < 32; i++) {
        if (reg[i].used && reg[i].port == s->port) {
            reg[i].pid = s->pid;
            return;
        }
        if (!reg[i].used && free_slot < 0) free_slot = i;
    }
    if (free_slot < 0) return;
    if (!reg_owner) {
        reg_owner = getpid();
        atexit(reg_at_exit);
    }
    reg_ent *e = &reg[free_slot];
    e->used = true;
    e->own = s->own_datadir;
    e->port = s->port;
    e->pid = s->pid;
    snprintf(e->datadir, sizeof e->datadir, "%s", s->datadir);
    snprintf(e->log, sizeof e->log, "%s", s->log);
}

static void reg_drop(const spawn_srv *s) {
    for (int i = 0; i < 32; i++)
        if (reg[i].used && reg[i].port == s->port) reg[i].used = false;
}

/* Reap the child if it has exited; returns true when it is gone. */
static bool reaped(spawn_srv *s, int *wstatus) {
    pid_t r = waitpid(s->pid, wstatus, WNOHANG);
    if (r == s->pid || (r < 0 && errno == ECHILD)) {
        s->pid = 0;
        reg_update(s);
        return true;
    }
    return false;
}

static int start(spawn_srv *s) {
    char a[8][600];
    char *argv[24];
    int n = 0;
    if (s->kind == SPAWN_NATS) {
        argv[n++] = "nats-server";
        argv[n++] = "-a";
        argv[n++] = "127.0.0.1";
        argv[n++] = "-p";
        snprintf(a[0], sizeof a[0], "%d", s->port);
        argv[n++] = a[0];
    } else {
        snprintf(a[0], sizeof a[0], "http://127.0.0.1:%d", s->port);
        snprintf(a[1], sizeof a[1], "http://127.0.0.1:%d", s->peer_port);
        snprintf(a[2], sizeof a[2], "mg-spawn=http://127.0.0.1:%d", s->peer_port);
        argv[n++] = "etcd";
        argv[n++] = "--name";
        argv[n++] = "mg-spawn";
        argv[n++] = "--data-dir";
        argv[n++] = s->datadir;
        argv[n++] = "--listen-client-urls";
        argv[n++] = a[0];
        argv[n++] = "--advertise-client-urls";
        argv[n++] = a[0];
        argv[n++] = "--listen-peer-urls";
        argv[n++] = a[1];
        argv[n++] = "--initial-advertise-peer-urls";
        argv[n++] = a[1];
        argv[n++] = "--initial-cluster";
        argv[n++] = a[2];
    }
    argv[n] = NULL;

    int logfd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        fprintf(stderr, "spawn: cannot open log %s: %s\n", s->log, strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "spawn: fork: %s\n", strerror(errno));
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        /* Die with the test: a crashed test must not leave a server holding ports. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int nullfd = open("/dev/null", O_RDONLY);
        if (nullfd >= 0) dup2(nullfd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(logfd);
    s->pid = pid;
    reg_update(s);

    long long end = now_ms() + 30000;
    for (;;) {
        int ws;
        if (reaped(s, &ws)) {
            fprintf(stderr, "spawn: %s exited during start (status %d); see %s\n", argv[0], ws,
                    s->log);
            return -1;
        }
        bool up = s->kind == SPAWN_NATS ? spawn_wait_port(s->port, 0) : etcd_healthy(s->port);
        if (up) return 0;
        if (now_ms() >= end) {
            fprintf(stderr, "spawn: %s not ready on port %d after 30 s; see %s\n", argv[0], s->port,
                    s->log);
            spawn_kill(s);
            return -1;
        }
        sleep_ms(50);
    }
}

int spawn_nats(spawn_srv *s) {
    memset(s, 0, sizeof *s);
    s->kind = SPAWN_NATS;
    s->port = spawn_free_port();
    if (s->port < 0) return -1;
    snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%d", s->port);
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(s->log, sizeof s->log, "%s/mg-spawn-nats-%d.log", tmp, s->port);
    return start(s);
}

int spawn_etcd(spawn_srv *s, const char *datadir) {
    memset(s, 0, sizeof *s);
    s->kind = SPAWN_ETCD;
    s->port = spawn_free_port();
    s->peer_port = spawn_free_port();
    while (s->peer_port == s->port && s->peer_port >= 0) s->peer_port = spawn_free_port();
    if (s->port < 0 || s->peer_port < 0) return -1;
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    if (datadir) {
        snprintf(s->datadir, sizeof s->datadir, "%s", datadir);
    } else {
        snprintf(s->datadir, sizeof s->datadir, "%s/mg-spawn-etcd-XXXXXX", tmp);
        if (!mkdtemp(s->datadir)) {
            fprintf(stderr, "spawn: mkdtemp %s: %s\n", s->datadir, strerror(errno));
            return -1;
        }
        s->own_datadir = true;
    }
    snprintf(s->log, sizeof s->log, "%s.log", s->datadir);
    return start(s);
}

static int signal_and_wait(spawn_srv *s, int sig) {
    if (s->pid <= 0) return -1;
    kill(s->pid, sig);
    long long end = now_ms() + 10000;
    int ws;
    while (!reaped(s, &ws)) {
        if (now_ms() >= end && sig != SIGKILL) {
            fprintf(stderr, "spawn: pid %d ignored signal %d for 10 s; killing\n", s->pid, sig);
            kill(s->pid, SIGKILL);
            sig = SIGKILL;
        }
        sleep_ms(10);
    }
    return 0;
}

int spawn_stop(spawn_srv *s) {
    return signal_and_wait(s, SIGTERM);
}

int spawn_kill(spawn_srv *s) {
    return signal_and_wait(s, SIGKILL);
}

int spawn_restart(spawn_srv *s) {
    if (s->pid > 0) spawn_stop(s);
    return start(s);
}

static void remove_tree(const char *path) {
    /* The data dir is ours (a mkdtemp name), so a plain rm -rf of it is safe and short. */
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", path, (char *)NULL);
        _exit(127);
    }
    if (pid > 0) waitpid(pid, NULL, 0);
}

void spawn_cleanup(spawn_srv *s) {
    if (s->pid > 0) spawn_stop(s);
    reg_drop(s);
    if (s->log[0]) unlink(s->log);
    if (s->own_datadir && s->datadir[0]) remove_tree(s->datadir);
    s->own_datadir = false;
}

/* ---------------------------------------------------------------------------------------------
 * proxy: one thread polling the listener and every connection pair */

#define PROXY_MAX 64

struct spawn_proxy {
    int lfd, port, target;
    char url[64];
    atomic_bool blocked, stop;
    pthread_t th;
    int a[PROXY_MAX], b[PROXY_MAX]; /* client side, server side; -1 when free */
};

static void pair_close(spawn_proxy *p, int i) {
    close(p->a[i]);
    close(p->b[i]);
    p->a[i] = p->b[i] = -1;
}

/* Copy what is readable from one side to the other; false when the pair is finished. */
static bool pump(int from, int to) {
    char buf[16384];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0) return false;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w <= 0) return false;
        off += w;
    }
    return true;
}

static void *proxy_main(void *arg) {
    spawn_proxy *p = arg;
    struct pollfd fds[1 + 2 * PROXY_MAX];
    int who[1 + 2 * PROXY_MAX];
    while (!atomic_load(&p->stop)) {
        bool blocked = atomic_load(&p->blocked);
        int nf = 0;
        fds[nf] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
        who[nf++] = -1;
        for (int i = 0; i < PROXY_MAX; i++) {
            if (p->a[i] < 0) continue;
            if (blocked) {
                pair_close(p, i);
                continue;
            }
            fds[nf] = (struct pollfd){.fd = p->a[i], .events = POLLIN};
            who[nf++] = i;
            fds[nf] = (struct pollfd){.fd = p->b[i], .events = POLLIN};
            who[nf++] = i + PROXY_MAX;
        }
        if (poll(fds, (nfds_t)nf, 20) <= 0) continue;
        if (fds[0].revents & POLLIN) {
            int cfd = accept(p->lfd, NULL, NULL);
            if (cfd >= 0) {
                int slot = -1;
                for (int i = 0; i < PROXY_MAX && slot < 0; i++)
                    if (p->a[i] < 0) slot = i;
                int sfd = blocked || slot < 0 ? -1 : connect_port(p->target);
                if (sfd < 0) {
                    close(cfd);
                } else {
                    struct timeval tv = {0, 0}; /* connect_port set timeouts; the proxy blocks */
                    setsockopt(sfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
                    setsockopt(sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
                    p->a[slot] = cfd;
                    p->b[slot] = sfd;
                }
            }
        }
        for (int f = 1; f < nf; f++) {
            if (!fds[f].revents) continue;
            int i = who[f] % PROXY_MAX;
            if (p->a[i] < 0) continue; /* closed earlier in this round */
            bool ok = who[f] < PROXY_MAX ? pump(p->a[i], p->b[i]) : pump(p->b[i], p->a[i]);
            if (!ok) pair_close(p, i);
        }
    }
    for (int i = 0; i < PROXY_MAX; i++)
        if (p->a[i] >= 0) pair_close(p, i);
    return NULL;
}

spawn_proxy *spawn_proxy_start(int target_port) {
    spawn_proxy *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    for (int i = 0; i < PROXY_MAX; i++) p->a[i] = p->b[i] = -1;
    p->target = target_port;
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(p->lfd, 64) != 0 || getsockname(p->lfd, (struct sockaddr *)&a, &len) != 0) {
        fprintf(stderr, "spawn proxy: cannot listen: %s\n", strerror(errno));
        if (p->lfd >= 0) close(p->lfd);
        free(p);
        return NULL;
    }
    p->port = ntohs(a.sin_port);
    snprintf(p->url, sizeof p->url, "http://127.0.0.1:%d", p->port);
    if (pthread_create(&p->th, NULL, proxy_main, p) != 0) {
        close(p->lfd);
        free(p);
        return NULL;
    }
    return p;
}

int spawn_proxy_port(const spawn_proxy *p) {
    return p->port;
}

const char *spawn_proxy_url(const spawn_proxy *p) {
    return p->url;
}

void spawn_proxy_block(spawn_proxy *p, bool blocked) {
    atomic_store(&p->blocked, blocked);
    /* Let the thread act on it (close what it carries) before the caller goes on. */
    sleep_ms(60);
}

void spawn_proxy_stop(spawn_proxy *p) {
    if (!p) return;
    atomic_store(&p->stop, true);
    pthread_join(p->th, NULL);
    close(p->lfd);
    free(p);
}
