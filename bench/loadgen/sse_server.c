/* sse_server.c - magneto-sse-server: a tiny, fast OpenAI-style streaming server for testing and
 * benchmarking the load generator (no model: it streams common English words, one o200k token
 * each, as fast as the socket takes them or at a set pace) and for injecting faults.
 *
 *   magneto-sse-server [--host 127.0.0.1] [--port 0] [--threads 1] [--batch 16]
 *                      [--ttft-ms 0] [--itl-ms 0] [--default-osl 16] [--reasoning-tokens 0]
 *                      [--fault-500 N] [--fault-reset N] [--fault-malformed N] [--fault-close N]
 *                      [--conn-max-requests N]
 *
 * It prints "PORT <n>" on stdout once listening. /v1/chat/completions and /v1/completions accept
 * a JSON body; the response has max_completion_tokens (else max_tokens, else --default-osl)
 * tokens; "stream": true gives SSE over chunked transfer (a role-only first chunk, one chunk per
 * token, a finish chunk, a usage chunk when stream_options.include_usage, then [DONE]), else one
 * JSON body. With --batch K, K events go out per write, so the client sees bursts as it would from
 * a batching engine. --fault-X N makes every Nth request (counted over all threads, from 1) fail:
 * 500 answers HTTP 500 with an OpenAI error body; reset sends part of the stream then resets the
 * connection (RST); malformed sends an SSE line that is not JSON mid-stream; close closes the
 * connection cleanly mid-stream without the terminating chunk. --conn-max-requests N closes a
 * connection after N responses without announcing it, as a keep-alive timeout would.
 *
 * One epoll loop per thread, each with its own SO_REUSEPORT listener; connections are
 * edge-triggered and served round-robin a few batches at a time so none starves the others. */
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *words[] = {" the", " of", " and",  " to",  " in", " is", " that", " for",
                              " it",  " as", " with", " was", " on", " be", " by",   " at"};
#define NWORDS 16

typedef struct opts {
    char host[64];
    int port, threads, batch, default_osl, reasoning_tokens;
    double ttft_ms, itl_ms;
    long fault_500, fault_reset, fault_malformed, fault_close;
    long conn_max_requests; /* close a kept-alive connection after this many responses */
} opts;

static opts O = {"127.0.0.1", 0, 1, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0};
static atomic_ulong g_requests;

enum { F_NONE, F_500, F_RESET, F_MALFORMED, F_CLOSE };
enum { S_READ, S_STREAM, S_FLUSH_CLOSE };

typedef struct sconn {
    int fd;
    int state;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    /* The response being streamed. */
    bool chat, stream, usage, keep_alive, started, finished, queued, waiting;
    int osl, sent, reasoning, fault, isl_chars;
    long served; /* responses completed on this connection */
    int64_t next_ns;
    char prefix[512], prefix_r[512]; /* event text before the token (content / reasoning) */
    size_t prefix_len, prefix_r_len;
    const char *suffix;
    size_t suffix_len;
    char id[48];
    char model_json[256];
    struct sconn *next_ready;
} sconn;

typedef struct worker {
    int ep, lfd;
    sconn *ready_head, *ready_tail;
    sconn *dead; /* closed connections, freed after the event batch */
    sconn **waiting;
    size_t n_waiting, cap_waiting;
} worker;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int reserve(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    char *n = realloc(*p, c);
    if (!n) return -1;
    *p = n;
    *cap = c;
    return 0;
}

static int out_add(sconn *c, const char *s, size_t n) {
    if (reserve(&c->out, &c->out_cap, c->out_len + n + 1)) return -1;
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
    return 0;
}

/* One HTTP chunk holding data (already formatted). */
static int out_chunk(sconn *c, const char *data, size_t n) {
    char hdr[24];
    int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", n);
    if (out_add(c, hdr, hl) || out_add(c, data, n) || out_add(c, "\r\n", 2)) return -1;
    return 0;
}

static void conn_free(worker *w, sconn *c, bool reset) {
    if (reset) {
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd);
    c->fd = -1;
    /* Freed later: the current epoll batch, the ready list or the waiting list may still point
     * at it. */
    if (c->queued || c->waiting) return; /* freed when it leaves that list */
    c->next_ready = w->dead;
    w->dead = c;
}

static void free_dead(worker *w) {
    while (w->dead) {
        sconn *c = w->dead;
        w->dead = c->next_ready;
        free(c->in);
        free(c->out);
        free(c);
    }
}

static void ready_push(worker *w, sconn *c) {
    if (c->queued) return;
    c->queued = true;
    c->next_ready = NULL;
    if (w->ready_tail)
        w->ready_tail->next_ready = c;
    else
        w->ready_head = c;
    w->ready_tail = c;
}

static void wait_push(worker *w, sconn *c) {
    if (c->waiting) return;
    if (w->n_waiting == w->cap_waiting) {
        size_t nc = w->cap_waiting ? w->cap_waiting * 2 : 64;
        sconn **n = realloc(w->waiting, nc * sizeof *n);
        if (!n) return;
        w->waiting = n;
        w->cap_waiting = nc;
    }
    c->waiting = true;
    w->waiting[w->n_waiting++] = c;
}

static void simple_response(sconn *c, int code, const char *reason, const char *body) {
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "%s\r\n",
                     code, reason, strlen(body), c->keep_alive ? "" : "Connection: close\r\n");
    out_add(c, hdr, n);
    out_add(c, body, strlen(body));
    c->finished = true;
}

/* Parse a complete request at c->in; returns bytes consumed, 0 when incomplete, -1 on junk. */
static long parse_request(sconn *c) {
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) return c->in_len > 65536 ? -1 : 0;
    size_t head = end - c->in + 4;
    long clen = 0;
    c->keep_alive = true;
    char path[256] = "", req[512];
    /* The input is not NUL-terminated: scan a copy of the request line only ("GET\r\n\r\n"
     * sent sscanf on past the received bytes). */
    size_t rl = (size_t)((char *)memchr(c->in, '\n', head) - c->in);
    if (rl >= sizeof req) rl = sizeof req - 1;
    memcpy(req, c->in, rl);
    req[rl] = 0;
    if (sscanf(req, "%*s %255s", path) != 1) return -1;
    for (char *l = memchr(c->in, '\n', head); l && l < end; l = memchr(l + 1, '\n', end - l)) {
        char *s = l + 1;
        if (!strncasecmp(s, "content-length:", 15))
            clen = strtol(s + 15, NULL, 10);
        else if (!strncasecmp(s, "connection:", 11)) {
            char *v = s + 11;
            while (*v == ' ') v++;
            if (!strncasecmp(v, "close", 5)) c->keep_alive = false;
        }
    }
    if (clen < 0 || clen > (64 << 20)) return -1;
    if (c->in_len < head + clen) return 0;
    unsigned long no = atomic_fetch_add(&g_requests, 1) + 1;
    c->fault = F_NONE;
    if (O.fault_500 && no % O.fault_500 == 0)
        c->fault = F_500;
    else if (O.fault_reset && no % O.fault_reset == 0)
        c->fault = F_RESET;
    else if (O.fault_malformed && no % O.fault_malformed == 0)
        c->fault = F_MALFORMED;
    else if (O.fault_close && no % O.fault_close == 0)
        c->fault = F_CLOSE;
    c->out_len = c->out_off = 0;
    c->finished = false;
    c->started = false;
    c->sent = 0;
    snprintf(c->id, sizeof c->id, "%lu", no);
    bool chat = strcmp(path, "/v1/chat/completions") == 0;
    bool comp = strcmp(path, "/v1/completions") == 0;
    if (!strcmp(path, "/health")) {
        simple_response(c, 200, "OK", "{\"status\":\"ok\"}");
        return head + clen;
    }
    if (!chat && !comp) {
        simple_response(c, 404, "Not Found", "{\"error\":{\"message\":\"no such path\"}}");
        return head + clen;
    }
    json_error_t err;
    json_t *b = json_loadb(c->in + head, clen, 0, &err);
    if (!b || !json_is_object(b)) {
        json_decref(b);
        simple_response(c, 400, "Bad Request",
                        "{\"error\":{\"message\":\"body is not a JSON object\",\"code\":400}}");
        return head + clen;
    }
    if (c->fault == F_500) {
        json_decref(b);
        simple_response(c, 500, "Internal Server Error",
                        "{\"error\":{\"message\":\"injected fault\",\"type\":"
                        "\"InternalServerError\",\"code\":500}}");
        return head + clen;
    }
    c->chat = chat;
    json_t *mt = json_object_get(b, "max_completion_tokens");
    if (!json_is_integer(mt)) mt = json_object_get(b, "max_tokens");
    c->osl = json_is_integer(mt) ? (int)json_integer_value(mt) : O.default_osl;
    if (c->osl < 1) c->osl = 1;
    c->stream = json_is_true(json_object_get(b, "stream"));
    c->usage = json_is_true(json_object_get(json_object_get(b, "stream_options"), "include_usage"));
    c->reasoning = chat ? O.reasoning_tokens : 0;
    if (c->reasoning > c->osl) c->reasoning = c->osl;
    json_t *model = json_object_get(b, "model");
    char *mj = model ? json_dumps(model, JSON_ENCODE_ANY) : NULL; /* none: "unknown" below */
    snprintf(c->model_json, sizeof c->model_json, "%s", mj ? mj : "\"unknown\"");
    free(mj);
    json_decref(b);
    long created = (long)time(NULL);
    if (chat) {
        c->prefix_len =
            snprintf(c->prefix, sizeof c->prefix,
                     "data: {\"id\":\"chatcmpl-%s\",\"object\":\"chat.completion.chunk\","
                     "\"created\":%ld,\"model\":%s,\"choices\":[{\"index\":0,\"delta\":"
                     "{\"content\":\"",
                     c->id, created, c->model_json);
        c->prefix_r_len =
            snprintf(c->prefix_r, sizeof c->prefix_r,
                     "data: {\"id\":\"chatcmpl-%s\",\"object\":\"chat.completion.chunk\","
                     "\"created\":%ld,\"model\":%s,\"choices\":[{\"index\":0,\"delta\":"
                     "{\"reasoning_content\":\"",
                     c->id, created, c->model_json);
        c->suffix = "\"},\"finish_reason\":null}]}\n\n";
    } else {
        c->prefix_len =
            snprintf(c->prefix, sizeof c->prefix,
                     "data: {\"id\":\"cmpl-%s\",\"object\":\"text_completion\","
                     "\"created\":%ld,\"model\":%s,\"choices\":[{\"index\":0,\"text\":\"",
                     c->id, created, c->model_json);
        c->suffix = "\",\"finish_reason\":null}]}\n\n";
    }
    c->suffix_len = strlen(c->suffix);
    if (!c->stream) { /* whole body at once (after the configured delays) */
        size_t cap = (size_t)c->osl * 8 + 1024;
        char *txt = malloc(cap), *body = malloc(cap + 1024);
        size_t tl = 0;
        for (int i = 0; i < c->osl; i++) {
            const char *wd = words[i % NWORDS];
            size_t wl = strlen(wd);
            memcpy(txt + tl, wd, wl);
            tl += wl;
        }
        txt[tl] = 0;
        int bl;
        if (chat)
            bl = snprintf(body, cap + 1024,
                          "{\"id\":\"chatcmpl-%s\",\"object\":\"chat.completion\",\"created\":%ld,"
                          "\"model\":%s,\"choices\":[{\"index\":0,\"message\":{\"role\":"
                          "\"assistant\",\"content\":\"%s\"},\"finish_reason\":\"length\"}],"
                          "\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":%d,"
                          "\"total_tokens\":%d}}",
                          c->id, created, c->model_json, txt, c->osl, c->osl);
        else
            bl = snprintf(body, cap + 1024,
                          "{\"id\":\"cmpl-%s\",\"object\":\"text_completion\",\"created\":%ld,"
                          "\"model\":%s,\"choices\":[{\"index\":0,\"text\":\"%s\","
                          "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":0,"
                          "\"completion_tokens\":%d,\"total_tokens\":%d}}",
                          c->id, created, c->model_json, txt, c->osl, c->osl);
        char hdr[200];
        int hl = snprintf(hdr, sizeof hdr,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\n%s\r\n",
                          bl, c->keep_alive ? "" : "Connection: close\r\n");
        out_add(c, hdr, hl);
        out_add(c, body, bl);
        free(txt);
        free(body);
        c->finished = true;
        c->next_ns = now_ns() + (int64_t)((O.ttft_ms + O.itl_ms * (c->osl - 1)) * 1e6);
        return head + clen;
    }
    c->state = S_STREAM;
    c->next_ns = now_ns() + (int64_t)(O.ttft_ms * 1e6);
    return head + clen;
}

/* Append the next batch of the stream to c->out. */
static void gen_batch(sconn *c) {
    if (!c->started) {
        const char *hdr = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                          "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n";
        out_add(c, hdr, strlen(hdr));
        if (!c->keep_alive) out_add(c, "Connection: close\r\n", 19);
        out_add(c, "\r\n", 2);
        char ev[600];
        int n;
        if (c->chat)
            n = snprintf(ev, sizeof ev,
                         "data: {\"id\":\"chatcmpl-%s\",\"object\":\"chat.completion.chunk\","
                         "\"created\":0,\"model\":%s,\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                         "\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
                         c->id, c->model_json);
        else
            n = 0;
        if (n) out_chunk(c, ev, n);
        c->started = true;
    }
    int k = O.itl_ms > 0 ? 1 : O.batch;
    if (k > c->osl - c->sent) k = c->osl - c->sent;
    size_t per = c->prefix_r_len > c->prefix_len ? c->prefix_r_len : c->prefix_len;
    size_t need = (size_t)k * (per + 16 + c->suffix_len) + 64;
    char hdr[24];
    /* Reserve room for the chunk header, write the events, then fill the header in front. */
    if (reserve(&c->out, &c->out_cap, c->out_len + need + 32)) return;
    size_t hpos = c->out_len;
    c->out_len += 10; /* placeholder: "%08zx\r\n" */
    size_t dstart = c->out_len;
    for (int i = 0; i < k; i++, c->sent++) {
        const char *wd = words[c->sent % NWORDS];
        size_t wl = strlen(wd);
        bool r = c->sent < c->reasoning;
        memcpy(c->out + c->out_len, r ? c->prefix_r : c->prefix,
               r ? c->prefix_r_len : c->prefix_len);
        c->out_len += r ? c->prefix_r_len : c->prefix_len;
        memcpy(c->out + c->out_len, wd, wl);
        c->out_len += wl;
        memcpy(c->out + c->out_len, c->suffix, c->suffix_len);
        c->out_len += c->suffix_len;
        if (c->fault == F_MALFORMED && c->sent == c->osl / 2) {
            static const char bad[] = "data: {\"choices\":[{\"delta\":{\"content\":\"tru\n\n";
            memcpy(c->out + c->out_len, bad, sizeof bad - 1);
            c->out_len += sizeof bad - 1;
        }
    }
    size_t dlen = c->out_len - dstart;
    snprintf(hdr, sizeof hdr, "%08zx\r\n", dlen); /* leading zeros are valid chunk-size hex */
    memcpy(c->out + hpos, hdr, 10);
    out_add(c, "\r\n", 2);
    if (c->sent >= c->osl) {
        char ev[800];
        int n;
        if (c->chat)
            n = snprintf(ev, sizeof ev,
                         "data: {\"id\":\"chatcmpl-%s\",\"object\":\"chat.completion.chunk\","
                         "\"created\":0,\"model\":%s,\"choices\":[{\"index\":0,\"delta\":{},"
                         "\"finish_reason\":\"length\"}]}\n\n",
                         c->id, c->model_json);
        else
            n = snprintf(ev, sizeof ev,
                         "data: {\"id\":\"cmpl-%s\",\"object\":\"text_completion\",\"created\":0,"
                         "\"model\":%s,\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":"
                         "\"length\"}]}\n\n",
                         c->id, c->model_json);
        if (c->usage)
            n += snprintf(ev + n, sizeof ev - n,
                          "data: {\"id\":\"x-%s\",\"choices\":[],\"usage\":{\"prompt_tokens\":0,"
                          "\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n",
                          c->id, c->osl, c->osl);
        n += snprintf(ev + n, sizeof ev - n, "data: [DONE]\n\n");
        out_chunk(c, ev, n);
        out_add(c, "0\r\n\r\n", 5);
        c->finished = true;
    }
    if (O.itl_ms > 0) c->next_ns = now_ns() + (int64_t)(O.itl_ms * 1e6);
}

static void handle_input(worker *w, sconn *c);

/* Write what is pending and produce more, a few batches per turn. Returns false when c died. */
static bool pump(worker *w, sconn *c) {
    for (int turn = 0; turn < 8; turn++) {
        while (c->out_off < c->out_len) {
            ssize_t k = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (k > 0) {
                c->out_off += k;
                continue;
            }
            if (k < 0 && errno == EAGAIN) return true; /* EPOLLOUT edge resumes */
            if (k < 0 && errno == EINTR) continue;
            conn_free(w, c, false);
            return false;
        }
        c->out_off = c->out_len = 0;
        if (c->state != S_STREAM && !c->finished) return true;
        if (c->finished) {
            c->finished = false;
            if (c->state == S_STREAM && c->next_ns > now_ns() && !c->stream) {
                /* unreachable: non-stream bodies are sent in one go below */
            }
            c->state = S_READ;
            c->served++;
            /* --conn-max-requests: close without "Connection: close", as a server whose
             * keep-alive timeout fires just as the client reuses the connection. */
            if (!c->keep_alive || (O.conn_max_requests && c->served >= O.conn_max_requests)) {
                conn_free(w, c, false);
                return false;
            }
            if (c->in_len) handle_input(w, c); /* a pipelined request */
            return c->fd >= 0;
        }
        /* Streaming: the fault cases end the stream early. */
        if ((c->fault == F_RESET || c->fault == F_CLOSE) && c->sent >= c->osl / 2 && c->sent > 0) {
            conn_free(w, c, c->fault == F_RESET);
            return false;
        }
        if (c->next_ns > now_ns()) {
            wait_push(w, c);
            return true;
        }
        gen_batch(c);
    }
    ready_push(w, c); /* more to send: come back after the others had a turn */
    return true;
}

static void handle_input(worker *w, sconn *c) {
    if (c->state != S_READ) return;
    long used = parse_request(c);
    if (used < 0) {
        conn_free(w, c, false);
        return;
    }
    if (used == 0) return;
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    if (c->finished && c->next_ns > now_ns()) { /* a delayed non-streaming answer */
        c->state = S_STREAM;
        c->stream = false;
        wait_push(w, c);
        return;
    }
    pump(w, c);
}

static void on_readable(worker *w, sconn *c) {
    for (;;) {
        if (reserve(&c->in, &c->in_cap, c->in_len + 16384)) {
            conn_free(w, c, false);
            return;
        }
        ssize_t k = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (k > 0) {
            c->in_len += k;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN) break;
        conn_free(w, c, false); /* EOF or error: the client went away */
        return;
    }
    handle_input(w, c);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    struct epoll_event evs[512];
    for (;;) {
        int timeout = -1;
        int64_t now = now_ns();
        if (w->ready_head)
            timeout = 0;
        else if (w->n_waiting) {
            int64_t mn = INT64_MAX;
            for (size_t i = 0; i < w->n_waiting; i++)
                if (w->waiting[i]->next_ns < mn) mn = w->waiting[i]->next_ns;
            timeout = mn <= now ? 0 : (int)((mn - now + 999999) / 1000000);
        }
        int n = epoll_wait(w->ep, evs, 512, timeout);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) { /* listener */
                for (;;) {
                    int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    sconn *c = calloc(1, sizeof *c);
                    if (!c) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                             .data.ptr = c};
                    epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            sconn *c = evs[i].data.ptr;
            if (c->fd < 0) continue;
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                on_readable(w, c);
                if (c->fd < 0) continue;
            }
            if (evs[i].events & EPOLLOUT && !c->queued && !c->waiting) pump(w, c);
        }
        free_dead(w);
        /* Connections that still had data: one more round each. */
        sconn *head = w->ready_head;
        w->ready_head = w->ready_tail = NULL;
        while (head) {
            sconn *c = head;
            head = c->next_ready;
            c->queued = false;
            if (c->fd < 0) {
                if (!c->waiting) free(c->in), free(c->out), free(c);
                continue;
            }
            pump(w, c);
        }
        now = now_ns();
        for (size_t i = 0; i < w->n_waiting;) {
            sconn *c = w->waiting[i];
            if (c->fd >= 0 && c->next_ns > now) {
                i++;
                continue;
            }
            w->waiting[i] = w->waiting[--w->n_waiting];
            c->waiting = false;
            if (c->fd < 0) {
                if (!c->queued) free(c->in), free(c->out), free(c);
                continue;
            }
            if (c->state == S_STREAM && !c->stream) c->state = S_READ; /* delayed full body */
            pump(w, c);
        }
    }
    return NULL;
}

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, O.host, &a.sin_addr) != 1) {
        fprintf(stderr, "magneto-sse-server: --host %s: not an IPv4 address\n", O.host);
        exit(2);
    }
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 4096)) {
        fprintf(stderr, "magneto-sse-server: bind %s:%d: %s\n", O.host, port, strerror(errno));
        exit(1);
    }
    return fd;
}

static void usage(void) {
    fprintf(stderr, "usage: magneto-sse-server [--host IP] [--port N] [--threads N] [--batch K]\n"
                    "  [--ttft-ms X] [--itl-ms X] [--default-osl N] [--reasoning-tokens N]\n"
                    "  [--fault-500 N] [--fault-reset N] [--fault-malformed N] [--fault-close N]\n"
                    "  [--conn-max-requests N]\n");
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        }
        if (!v) {
            fprintf(stderr, "magneto-sse-server: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--host"))
            snprintf(O.host, sizeof O.host, "%s", v);
        else if (!strcmp(a, "--port"))
            O.port = atoi(v);
        else if (!strcmp(a, "--threads"))
            O.threads = atoi(v);
        else if (!strcmp(a, "--batch"))
            O.batch = atoi(v);
        else if (!strcmp(a, "--ttft-ms"))
            O.ttft_ms = atof(v);
        else if (!strcmp(a, "--itl-ms"))
            O.itl_ms = atof(v);
        else if (!strcmp(a, "--default-osl"))
            O.default_osl = atoi(v);
        else if (!strcmp(a, "--reasoning-tokens"))
            O.reasoning_tokens = atoi(v);
        else if (!strcmp(a, "--fault-500"))
            O.fault_500 = atol(v);
        else if (!strcmp(a, "--fault-reset"))
            O.fault_reset = atol(v);
        else if (!strcmp(a, "--fault-malformed"))
            O.fault_malformed = atol(v);
        else if (!strcmp(a, "--fault-close"))
            O.fault_close = atol(v);
        else if (!strcmp(a, "--conn-max-requests"))
            O.conn_max_requests = atol(v);
        else {
            fprintf(stderr, "magneto-sse-server: unknown option %s\n", a);
            usage();
            return 2;
        }
    }
    if (O.threads < 1) O.threads = 1;
    if (O.batch < 1) O.batch = 1;
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl)) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int lfd0 = listen_on(O.port);
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    getsockname(lfd0, (struct sockaddr *)&a, &al);
    int port = ntohs(a.sin_port);
    worker *ws = calloc(O.threads, sizeof *ws);
    pthread_t *th = calloc(O.threads, sizeof *th);
    for (int t = 0; t < O.threads; t++) {
        ws[t].lfd = t == 0 ? lfd0 : listen_on(port);
        ws[t].ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(ws[t].ep, EPOLL_CTL_ADD, ws[t].lfd, &ev);
    }
    printf("PORT %d\n", port);
    fflush(stdout);
    for (int t = 1; t < O.threads; t++) pthread_create(&th[t], NULL, worker_main, &ws[t]);
    worker_main(&ws[0]);
    return 0;
}
