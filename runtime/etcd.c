/* etcd.c - etcd v3 client over the JSON gateway: unary calls, lease keep-alive, resumable watch.
 *
 * Unary calls POST one JSON object to /v3/<service>/<method> and read one back. Curl easy handles
 * are pooled per client so connections are reused and calls from several threads never share a
 * handle. A watch is a long-lived POST to /v3/watch whose response streams one JSON object per
 * line; it runs on its own thread through a curl multi handle, so that stopping it can wake the
 * poll (curl_multi_wakeup) instead of waiting for traffic.
 *
 * Wire facts: keys and values are base64; int64 fields come as JSON strings; fields at their
 * zero value are omitted (a PUT event has no "type", a keep-alive of a dead lease has no "TTL"). */
#include "mono.h"
#include "etcd.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define POOL_MAX 8

struct etcd_client {
    char *url;
    int timeout_ms;
    pthread_mutex_t mu;
    CURL *pool[POOL_MAX]; /* idle handles, each with its live connection */
    int npool;
};

/* ---------------------------------------------------------------------------------------------
 * base64 and small helpers */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t etcd_b64_encode(const void *src, size_t n, char *dst) {
    const unsigned char *s = src;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        dst[o++] = B64[v >> 18];
        dst[o++] = B64[(v >> 12) & 63];
        dst[o++] = B64[(v >> 6) & 63];
        dst[o++] = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        dst[o++] = B64[v >> 18];
        dst[o++] = B64[(v >> 12) & 63];
        dst[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        dst[o++] = '=';
    }
    dst[o] = 0;
    return o;
}

static int b64_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

mg_status etcd_b64_decode(const char *src, size_t n, void *dst, size_t *out_len) {
    unsigned char *d = dst;
    while (n > 0 && src[n - 1] == '=') n--;
    if (n % 4 == 1) return MG_ERRF(MG_EPROTO, "base64: bad length %zu", n);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val((unsigned char)src[i]);
        if (v < 0) return MG_ERRF(MG_EPROTO, "base64: bad character 0x%02x at %zu", src[i], i);
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    *out_len = o;
    return MG_OK;
}

size_t etcd_prefix_end(const char *prefix, size_t n, char *dst) {
    memcpy(dst, prefix, n);
    while (n > 0) {
        if ((unsigned char)dst[n - 1] < 0xff) {
            dst[n - 1]++;
            return n;
        }
        n--;
    }
    /* All 0xff or empty: "\0" is etcd's "to the end of the keyspace". */
    dst[0] = 0;
    return 1;
}

/* Add a base64 field to obj. */
static int set_b64(json_t *obj, const char *field, const void *data, size_t n) {
    char stack[256];
    size_t need = ETCD_B64_LEN(n);
    char *b = need <= sizeof stack ? stack : malloc(need);
    if (!b) return -1;
    etcd_b64_encode(data, n, b);
    int rc = json_object_set_new(obj, field, json_string(b));
    if (b != stack) free(b);
    return rc;
}

/* Decode a base64 string field into a fresh NUL-terminated buffer ("" when absent). */
static mg_status get_b64(json_t *obj, const char *field, char **out, size_t *len) {
    json_t *v = json_object_get(obj, field);
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    size_t sl = json_is_string(v) ? json_string_length(v) : 0;
    char *b = malloc(sl / 4 * 3 + 4);
    if (!b) return MG_ERRF(MG_ENOMEM, "etcd: out of memory decoding %s", field);
    size_t n = 0;
    mg_status st = etcd_b64_decode(s, sl, b, &n);
    if (st != MG_OK) {
        free(b);
        return MG_ERRF(MG_EPROTO, "etcd: field %s is not base64", field);
    }
    b[n] = 0;
    *out = b;
    *len = n;
    return MG_OK;
}

/* int64 fields arrive as strings ("12"), sometimes as numbers, and are omitted when zero. */
static int64_t jint(json_t *obj, const char *field) {
    json_t *v = json_object_get(obj, field);
    if (json_is_integer(v)) return json_integer_value(v);
    if (json_is_string(v)) return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

static bool jbool(json_t *obj, const char *field) {
    return json_is_true(json_object_get(obj, field));
}

static json_t *jstr_i64(int64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%" PRId64, v);
    return json_string(b);
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------------------------------
 * client and unary calls */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

mg_status etcd_client_create(const char *url, int timeout_ms, etcd_client **out) {
    *out = NULL;
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
        return MG_ERRF(MG_EINVAL, "etcd url \"%s\": want http://host:port", url ? url : "(null)");
    /* request URLs are built in 512-byte buffers: base + the longest path (/v3/watch, /v3/kv/...)
     */
    if (strlen(url) > ETCD_MAX_URL)
        return MG_ERRF(MG_EINVAL, "etcd url of %zu characters: at most %d", strlen(url),
                       ETCD_MAX_URL);
    pthread_once(&curl_once, curl_init_once);
    etcd_client *c = calloc(1, sizeof *c);
    if (!c || !(c->url = strdup(url))) {
        free(c);
        return MG_ERRF(MG_ENOMEM, "etcd: out of memory");
    }
    size_t n = strlen(c->url);
    while (n > 0 && c->url[n - 1] == '/') c->url[--n] = 0;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : ETCD_DEFAULT_TIMEOUT_MS;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return MG_OK;
}

void etcd_client_destroy(etcd_client *c) {
    if (!c) return;
    for (int i = 0; i < c->npool; i++) curl_easy_cleanup(c->pool[i]);
    pthread_mutex_destroy(&c->mu);
    free(c->url);
    free(c);
}

const char *etcd_client_url(const etcd_client *c) {
    return c->url;
}

static CURL *take_handle(etcd_client *c) {
    CURL *h = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->npool > 0) h = c->pool[--c->npool];
    pthread_mutex_unlock(&c->mu);
    return h ? h : curl_easy_init();
}

static void give_handle(etcd_client *c, CURL *h) {
    /* Options go, the cached connection stays. Reset here, not at the next take: the options
     * point at the finished call's stack (error buffer) and freed memory (body, headers), which
     * curl_easy_cleanup of a pooled handle could otherwise still write to. */
    curl_easy_reset(h);
    pthread_mutex_lock(&c->mu);
    if (c->npool < POOL_MAX) {
        c->pool[c->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (h) curl_easy_cleanup(h);
}

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static bool buf_append(buf *b, const char *data, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return false;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
    return true;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
    return buf_append(ud, data, size * nmemb) ? size * nmemb : 0;
}

/* Map a curl failure to a status with the URL in the message. */
static mg_status curl_fail(CURLcode rc, const char *url, const char *path, const char *detail) {
    const char *d = detail && detail[0] ? detail : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        return MG_ERRF(MG_EUNAVAIL, "etcd at %s unreachable (%s): %s", url, path, d);
    case CURLE_OPERATION_TIMEDOUT:
        return MG_ERRF(MG_ETIMEOUT, "etcd at %s did not answer in time (%s): %s", url, path, d);
    default:
        return MG_ERRF(MG_EIO, "etcd at %s (%s): %s", url, path, d);
    }
}

/* gRPC status codes the gateway reports in {"code": N, "message": "..."}. */
static mg_status grpc_status(int code) {
    switch (code) {
    case 3:
        return MG_EINVAL; /* InvalidArgument */
    case 4:
        return MG_ETIMEOUT; /* DeadlineExceeded */
    case 5:
        return MG_ENOTFOUND; /* NotFound */
    case 6:
        return MG_EEXIST; /* AlreadyExists */
    case 14:
        return MG_EUNAVAIL; /* Unavailable */
    case 8:
        return MG_EFULL; /* ResourceExhausted */
    case 1:
        return MG_ECANCELED; /* Canceled */
    default:
        return MG_ERR;
    }
}

/* An error object: {"error": "...", "code": N, "message": "..."} from unary calls, or
 * {"error": {"grpc_code": N, "http_code": N, "message": "..."}} from streaming ones. */
static mg_status check_error(json_t *resp, const char *url, const char *path, long http) {
    json_t *e = json_object_get(resp, "error");
    int code = -1;
    const char *msg = NULL;
    if (json_is_object(e)) {
        code = (int)jint(e, "grpc_code");
        msg = json_string_value(json_object_get(e, "message"));
    } else if (e || json_object_get(resp, "code")) {
        code = (int)jint(resp, "code");
        msg = json_string_value(json_object_get(resp, "message"));
        if (!msg) msg = json_string_value(e);
    } else if (http != 200) {
        return MG_ERRF(MG_EPROTO, "etcd at %s (%s): HTTP %ld", url, path, http);
    } else {
        return MG_OK;
    }
    return MG_ERRF(grpc_status(code), "etcd at %s (%s): %s (code %d)", url, path,
                   msg ? msg : "error", code);
}

/* POST req (consumed) to path; *resp gets the parsed answer on MG_OK. */
static mg_status call(etcd_client *c, const char *path, json_t *req, json_t **resp) {
    *resp = NULL;
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) return MG_ERRF(MG_ENOMEM, "etcd: cannot encode request for %s", path);
    CURL *h = take_handle(c);
    if (!h) {
        free(body);
        return MG_ERRF(MG_ENOMEM, "etcd: curl_easy_init failed");
    }
    char url[512];
    snprintf(url, sizeof url, "%s%s", c->url, path);
    char errbuf[CURL_ERROR_SIZE] = "";
    buf out = {0};
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->timeout_ms);
    CURLcode rc = curl_easy_perform(h);
    long http = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
    curl_slist_free_all(hdr);
    free(body);
    mg_status st = MG_OK;
    if (rc != CURLE_OK) {
        st = curl_fail(rc, c->url, path, errbuf);
        curl_easy_cleanup(h); /* its connection may be half-dead: do not pool it */
        h = NULL;
    } else {
        json_error_t jerr;
        json_t *j = out.p ? json_loadb(out.p, out.len, 0, &jerr) : NULL;
        if (!json_is_object(j)) {
            st = MG_ERRF(MG_EPROTO, "etcd at %s (%s): HTTP %ld, unparsable answer: %.120s", c->url,
                         path, http, out.p ? out.p : "");
            json_decref(j);
        } else if ((st = check_error(j, c->url, path, http)) != MG_OK) {
            json_decref(j);
        } else {
            *resp = j;
        }
    }
    free(out.p);
    if (h) give_handle(c, h);
    return st;
}

static json_t *range_req(const char *key, bool prefix) {
    json_t *req = json_object();
    size_t n = strlen(key);
    set_b64(req, "key", key, n);
    if (prefix) {
        char stack[256];
        char *end = n + 1 <= sizeof stack ? stack : malloc(n + 1);
        if (!end) {
            json_decref(req);
            return NULL;
        }
        size_t en = etcd_prefix_end(key, n, end);
        set_b64(req, "range_end", end, en);
        if (end != stack) free(end);
    }
    return req;
}

mg_status etcd_put(etcd_client *c, const char *key, const void *value, size_t len, int64_t lease) {
    json_t *req = json_object();
    set_b64(req, "key", key, strlen(key));
    set_b64(req, "value", value, len);
    if (lease) json_object_set_new(req, "lease", jstr_i64(lease));
    json_t *resp;
    mg_status st = call(c, "/v3/kv/put", req, &resp);
    json_decref(resp);
    return st;
}

mg_status etcd_create(etcd_client *c, const char *key, const void *value, size_t len,
                      int64_t lease) {
    json_t *put = json_object();
    set_b64(put, "key", key, strlen(key));
    set_b64(put, "value", value, len);
    if (lease) json_object_set_new(put, "lease", jstr_i64(lease));
    json_t *cmp = json_object();
    set_b64(cmp, "key", key, strlen(key));
    json_object_set_new(cmp, "result", json_string("EQUAL"));
    json_object_set_new(cmp, "target", json_string("CREATE"));
    json_object_set_new(cmp, "create_revision", json_string("0"));
    json_t *req = json_pack("{s:[o], s:[{s:o}]}", "compare", cmp, "success", "request_put", put);
    json_t *resp;
    mg_status st = call(c, "/v3/kv/txn", req, &resp);
    if (st == MG_OK && !jbool(resp, "succeeded"))
        st = MG_ERRF(MG_EEXIST, "etcd: key %s already exists", key);
    json_decref(resp);
    return st;
}

void etcd_kvs_free(etcd_kvs *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->kvs[i].key);
        free(r->kvs[i].value);
    }
    free(r->kvs);
    r->kvs = NULL;
    r->n = 0;
}

static mg_status parse_kv(json_t *o, etcd_kv *kv) {
    memset(kv, 0, sizeof *kv);
    mg_status st = get_b64(o, "key", &kv->key, &kv->key_len);
    if (st == MG_OK) st = get_b64(o, "value", &kv->value, &kv->value_len);
    if (st != MG_OK) {
        free(kv->key);
        free(kv->value);
        memset(kv, 0, sizeof *kv);
        return st;
    }
    kv->create_revision = jint(o, "create_revision");
    kv->mod_revision = jint(o, "mod_revision");
    kv->version = jint(o, "version");
    kv->lease = jint(o, "lease");
    return MG_OK;
}

static mg_status range(etcd_client *c, const char *key, bool prefix, etcd_kvs *out) {
    memset(out, 0, sizeof *out);
    json_t *req = range_req(key, prefix);
    if (!req) return MG_ERRF(MG_ENOMEM, "etcd: out of memory");
    json_t *resp;
    mg_status st = call(c, "/v3/kv/range", req, &resp);
    if (st != MG_OK) return st;
    out->revision = jint(json_object_get(resp, "header"), "revision");
    json_t *kvs = json_object_get(resp, "kvs");
    size_t n = json_is_array(kvs) ? json_array_size(kvs) : 0;
    if (n) {
        out->kvs = calloc(n, sizeof *out->kvs);
        if (!out->kvs) st = MG_ERRF(MG_ENOMEM, "etcd: out of memory for %zu keys", n);
    }
    for (size_t i = 0; st == MG_OK && i < n; i++) {
        st = parse_kv(json_array_get(kvs, i), &out->kvs[i]);
        if (st == MG_OK) out->n++;
    }
    json_decref(resp);
    if (st != MG_OK) etcd_kvs_free(out);
    return st;
}

mg_status etcd_get(etcd_client *c, const char *key, etcd_kvs *out) {
    mg_status st = range(c, key, false, out);
    if (st == MG_OK && out->n == 0) return MG_ERRF(MG_ENOTFOUND, "etcd: no key %s", key);
    return st;
}

mg_status etcd_get_prefix(etcd_client *c, const char *prefix, etcd_kvs *out) {
    return range(c, prefix, true, out);
}

mg_status etcd_delete(etcd_client *c, const char *key, bool prefix, int64_t *deleted) {
    json_t *req = range_req(key, prefix);
    if (!req) return MG_ERRF(MG_ENOMEM, "etcd: out of memory");
    json_t *resp;
    mg_status st = call(c, "/v3/kv/deleterange", req, &resp);
    if (st == MG_OK && deleted) *deleted = jint(resp, "deleted");
    json_decref(resp);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * leases */

mg_status etcd_lease_grant(etcd_client *c, int ttl_s, int64_t *lease) {
    if (ttl_s <= 0) return MG_ERRF(MG_EINVAL, "etcd lease: ttl %d s must be positive", ttl_s);
    json_t *req = json_pack("{s:I}", "TTL", (json_int_t)ttl_s);
    json_t *resp;
    mg_status st = call(c, "/v3/lease/grant", req, &resp);
    if (st != MG_OK) return st;
    const char *err = json_string_value(json_object_get(resp, "error"));
    *lease = jint(resp, "ID");
    if (err && err[0])
        st = MG_ERRF(MG_ERR, "etcd at %s: lease grant: %s", c->url, err);
    else if (*lease == 0)
        st = MG_ERRF(MG_EPROTO, "etcd at %s: lease grant answered without an ID", c->url);
    json_decref(resp);
    return st;
}

mg_status etcd_lease_keepalive_once(etcd_client *c, int64_t lease, int *ttl_left) {
    json_t *req = json_object();
    json_object_set_new(req, "ID", jstr_i64(lease));
    json_t *resp;
    mg_status st = call(c, "/v3/lease/keepalive", req, &resp);
    if (st != MG_OK) return st;
    /* A streaming method: the answer is wrapped in "result". */
    json_t *r = json_object_get(resp, "result");
    int64_t ttl = jint(r ? r : resp, "TTL");
    json_decref(resp);
    if (ttl_left) *ttl_left = (int)ttl;
    if (ttl <= 0) return MG_ERRF(MG_ENOTFOUND, "etcd: lease %" PRIx64 " has expired", lease);
    return MG_OK;
}

mg_status etcd_lease_revoke(etcd_client *c, int64_t lease) {
    json_t *req = json_object();
    json_object_set_new(req, "ID", jstr_i64(lease));
    json_t *resp;
    mg_status st = call(c, "/v3/lease/revoke", req, &resp);
    json_decref(resp);
    return st;
}

struct etcd_keepalive {
    etcd_client *c;
    int64_t lease;
    int interval_ms;
    etcd_lease_lost_cb lost_cb;
    void *ud;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    atomic_bool lost;
};

static void *keepalive_main(void *arg) {
    etcd_keepalive *k = arg;
    int wait_ms = k->interval_ms;
    bool warned = false;
    for (;;) {
        struct timespec ts;
        mono_deadline(&ts, wait_ms);
        pthread_mutex_lock(&k->mu);
        while (!k->stop && pthread_cond_timedwait(&k->cv, &k->mu, &ts) != ETIMEDOUT) {
        }
        bool stop = k->stop;
        pthread_mutex_unlock(&k->mu);
        if (stop) break;

        mg_status st = etcd_lease_keepalive_once(k->c, k->lease, NULL);
        if (st == MG_OK) {
            if (warned) MG_INFO("etcd lease %" PRIx64 ": renewed again", k->lease);
            warned = false;
            wait_ms = k->interval_ms;
        } else if (st == MG_ENOTFOUND) {
            MG_WARN("etcd lease %" PRIx64 " lost: %s", k->lease, mg_err_msg());
            atomic_store(&k->lost, true);
            if (k->lost_cb) k->lost_cb(k->ud, k->lease);
            break;
        } else {
            if (!warned)
                MG_WARN("etcd lease %" PRIx64 ": renewal failed, retrying: %s", k->lease,
                        mg_err_msg());
            warned = true;
            wait_ms = k->interval_ms < 1000 ? k->interval_ms : 1000;
        }
    }
    return NULL;
}

mg_status etcd_keepalive_start(etcd_client *c, int64_t lease, int ttl_s, etcd_lease_lost_cb lost,
                               void *ud, etcd_keepalive **out) {
    *out = NULL;
    if (ttl_s <= 0) return MG_ERRF(MG_EINVAL, "etcd keep-alive: ttl %d s must be positive", ttl_s);
    etcd_keepalive *k = calloc(1, sizeof *k);
    if (!k) return MG_ERRF(MG_ENOMEM, "etcd: out of memory");
    k->c = c;
    k->lease = lease;
    /* A third of the TTL leaves two more tries before the lease lapses. */
    k->interval_ms = ttl_s * 1000 / 3;
    if (k->interval_ms < 300) k->interval_ms = 300;
    k->lost_cb = lost;
    k->ud = ud;
    pthread_mutex_init(&k->mu, NULL);
    mono_cond_init(&k->cv);
    if (pthread_create(&k->th, NULL, keepalive_main, k) != 0) {
        pthread_cond_destroy(&k->cv);
        pthread_mutex_destroy(&k->mu);
        free(k);
        return MG_ERRF(MG_ERR, "etcd keep-alive: cannot start thread");
    }
    *out = k;
    return MG_OK;
}

void etcd_keepalive_stop(etcd_keepalive *k) {
    if (!k) return;
    pthread_mutex_lock(&k->mu);
    k->stop = true;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->th, NULL);
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

bool etcd_keepalive_lost(const etcd_keepalive *k) {
    return atomic_load(&((etcd_keepalive *)k)->lost);
}

/* ---------------------------------------------------------------------------------------------
 * watch */

struct etcd_watch {
    etcd_client *c;
    char *key, *end; /* key and range end (end NULL for a single key) */
    size_t key_len, end_len;
    etcd_watch_cb cb;
    void *ud;
    _Atomic int64_t last_rev;
    atomic_int reconnects;
    atomic_bool stop;
    CURLM *multi;
    pthread_t th;

    /* start handshake */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started;        /* the first watch was confirmed, or the first attempt failed */
    mg_status start_st;  /* result of the first attempt */
    char start_err[512]; /* its message, copied from the watch thread's error record */

    /* per connection */
    buf line;           /* bytes of the current, incomplete line */
    bool created;       /* etcd confirmed the watch on this connection */
    bool restart_now;   /* the stream must be re-created (compaction) without backoff */
    bool broken;        /* a connection ended since the last confirmed watch */
    mg_status conn_err; /* a protocol error that ended this connection */
    char *scratch_k, *scratch_v;
    size_t scratch_kcap, scratch_vcap;
};

static void start_done(etcd_watch *w, mg_status st) {
    pthread_mutex_lock(&w->mu);
    if (!w->started) {
        w->started = true;
        w->start_st = st;
        if (st != MG_OK) snprintf(w->start_err, sizeof w->start_err, "%s", mg_err_msg());
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
}

/* Decode a base64 field into a reusable scratch buffer; no allocation once it is big enough. */
static bool scratch_b64(json_t *o, const char *field, char **buf_, size_t *cap, size_t *len) {
    json_t *v = json_object_get(o, field);
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    size_t sl = json_is_string(v) ? json_string_length(v) : 0;
    size_t need = sl / 4 * 3 + 4;
    if (need > *cap) {
        char *p = realloc(*buf_, need);
        if (!p) return false;
        *buf_ = p;
        *cap = need;
    }
    if (etcd_b64_decode(s, sl, *buf_, len) != MG_OK) return false;
    (*buf_)[*len] = 0;
    return true;
}

/* One message of the stream. Returns false when the connection must end. */
static bool watch_message(etcd_watch *w, const char *text, size_t n) {
    json_error_t jerr;
    json_t *msg = json_loadb(text, n, 0, &jerr);
    if (!json_is_object(msg)) {
        w->conn_err =
            MG_ERRF(MG_EPROTO, "etcd watch at %s: unparsable message: %.120s", w->c->url, text);
        json_decref(msg);
        return false;
    }
    if (json_object_get(msg, "error")) {
        w->conn_err = check_error(msg, w->c->url, "/v3/watch", 200);
        json_decref(msg);
        return false;
    }
    json_t *r = json_object_get(msg, "result");
    if (!r) r = msg;
    bool keep = true;
    if (jbool(r, "created")) {
        if (atomic_load(&w->last_rev) < 0) {
            /* Watching "from now": the store revision at creation is the floor. */
            atomic_store(&w->last_rev, jint(json_object_get(r, "header"), "revision"));
        }
        w->created = true;
        if (w->broken) {
            w->broken = false;
            atomic_fetch_add(&w->reconnects, 1);
            MG_INFO("etcd watch %s: resumed after revision %" PRId64, w->key,
                    atomic_load(&w->last_rev));
        }
        start_done(w, MG_OK);
    }
    int64_t compact = jint(r, "compact_revision");
    if (compact > 0) {
        MG_WARN("etcd watch %s: revision %" PRId64 " was compacted; resuming at %" PRId64
                " (events in between are lost)",
                w->key, atomic_load(&w->last_rev) + 1, compact);
        etcd_event ev = {.type = ETCD_EV_COMPACTED,
                         .key = w->key,
                         .key_len = w->key_len,
                         .value = "",
                         .mod_revision = compact};
        w->cb(w->ud, &ev);
        atomic_store(&w->last_rev, compact - 1);
        w->restart_now = true;
        keep = false;
    } else if (jbool(r, "canceled")) {
        const char *why = json_string_value(json_object_get(r, "cancel_reason"));
        w->conn_err = MG_ERRF(MG_ECANCELED, "etcd watch at %s: canceled by the server: %s",
                              w->c->url, why ? why : "no reason given");
        keep = false;
    }
    json_t *evs = json_object_get(r, "events");
    /* Events of one revision (a transaction) arrive in one message, so the floor is the last
     * revision before this message; anything at or below it was delivered before a break. */
    int64_t floor = atomic_load(&w->last_rev), top = floor;
    for (size_t i = 0; keep && json_is_array(evs) && i < json_array_size(evs); i++) {
        json_t *e = json_array_get(evs, i);
        json_t *kv = json_object_get(e, "kv");
        etcd_event ev = {0};
        const char *type = json_string_value(json_object_get(e, "type"));
        ev.type = type && strcmp(type, "DELETE") == 0 ? ETCD_EV_DELETE : ETCD_EV_PUT;
        ev.mod_revision = jint(kv, "mod_revision");
        if (ev.mod_revision <= floor) continue;
        size_t kl = 0, vl = 0;
        if (!scratch_b64(kv, "key", &w->scratch_k, &w->scratch_kcap, &kl) ||
            !scratch_b64(kv, "value", &w->scratch_v, &w->scratch_vcap, &vl)) {
            w->conn_err =
                MG_ERRF(MG_EPROTO, "etcd watch at %s: bad key or value in event", w->c->url);
            keep = false;
            break;
        }
        ev.key = w->scratch_k;
        ev.key_len = kl;
        ev.value = w->scratch_v;
        ev.value_len = vl;
        ev.create_revision = jint(kv, "create_revision");
        ev.version = jint(kv, "version");
        ev.lease = jint(kv, "lease");
        w->cb(w->ud, &ev);
        if (ev.mod_revision > top) top = ev.mod_revision;
    }
    if (top > floor) atomic_store(&w->last_rev, top);
    json_decref(msg);
    return keep;
}

static size_t on_watch_data(char *data, size_t size, size_t nmemb, void *ud) {
    etcd_watch *w = ud;
    size_t n = size * nmemb;
    if (atomic_load(&w->stop)) return 0;
    if (!buf_append(&w->line, data, n)) return 0;
    /* Messages are newline-delimited JSON; keep a partial last line for the next chunk. */
    size_t start = 0;
    for (size_t i = 0; i < w->line.len; i++) {
        if (w->line.p[i] != '\n') continue;
        if (i > start && !watch_message(w, w->line.p + start, i - start)) return 0;
        start = i + 1;
    }
    memmove(w->line.p, w->line.p + start, w->line.len - start);
    w->line.len -= start;
    return n;
}

static char *watch_body(etcd_watch *w) {
    json_t *cr = json_object();
    set_b64(cr, "key", w->key, w->key_len);
    if (w->end) set_b64(cr, "range_end", w->end, w->end_len);
    int64_t last = atomic_load(&w->last_rev);
    if (last >= 0) json_object_set_new(cr, "start_revision", jstr_i64(last + 1));
    json_t *req = json_pack("{s:o}", "create_request", cr);
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return s;
}

/* Run one connection until it ends or stop is set. Returns MG_OK when stopped, else why it
 * ended (the thread's error record has the detail). */
static mg_status watch_connection(etcd_watch *w) {
    w->line.len = 0;
    w->created = false;
    w->restart_now = false;
    w->conn_err = MG_OK;
    char *body = watch_body(w);
    CURL *h = curl_easy_init();
    if (!body || !h) {
        free(body);
        if (h) curl_easy_cleanup(h);
        return MG_ERRF(MG_ENOMEM, "etcd watch: out of memory");
    }
    char url[512], errbuf[CURL_ERROR_SIZE] = "";
    snprintf(url, sizeof url, "%s/v3/watch", w->c->url);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_watch_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)w->c->timeout_ms);
    /* The stream is silent while nothing changes; TCP keep-alive notices a vanished peer. */
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 10L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 5L);
    curl_multi_add_handle(w->multi, h);

    int64_t t0 = mono_ms();
    mg_status st = MG_OK;
    CURLcode done = CURLE_OK;
    bool finished = false;
    while (!atomic_load(&w->stop)) {
        int running = 0;
        curl_multi_perform(w->multi, &running);
        int left;
        CURLMsg *m;
        while ((m = curl_multi_info_read(w->multi, &left)))
            if (m->msg == CURLMSG_DONE) {
                done = m->data.result;
                finished = true;
            }
        if (finished || !running) break;
        /* Until etcd confirms the watch, hold the client's deadline (a hung etcd must not make
         * watch_start hang). */
        if (!w->created && mono_ms() - t0 > w->c->timeout_ms) {
            done = CURLE_OPERATION_TIMEDOUT;
            snprintf(errbuf, sizeof errbuf, "no watch confirmation in %d ms", w->c->timeout_ms);
            finished = true;
            break;
        }
        curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
    }
    long http = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
    curl_multi_remove_handle(w->multi, h);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdr);
    free(body);
    if (atomic_load(&w->stop)) return MG_OK;
    if (w->conn_err != MG_OK) {
        st = w->conn_err; /* detail already recorded */
    } else if (w->restart_now) {
        st = MG_EGAP;
    } else if (finished && done != CURLE_OK && done != CURLE_WRITE_ERROR) {
        st = curl_fail(done, w->c->url, "/v3/watch", errbuf);
    } else if (http != 200 && http != 0) {
        st = MG_ERRF(MG_EPROTO, "etcd watch at %s: HTTP %ld", w->c->url, http);
    } else {
        st = MG_ERRF(MG_ECLOSED, "etcd watch at %s: stream closed by the server", w->c->url);
    }
    return st;
}

static void *watch_main(void *arg) {
    etcd_watch *w = arg;
    int backoff_ms = 100;
    bool warned = false;
    int64_t warned_at = 0;
    while (!atomic_load(&w->stop)) {
        mg_status st = watch_connection(w);
        if (atomic_load(&w->stop)) break;
        if (!w->started) {
            start_done(w, st); /* the first attempt failed: etcd_watch_start reports it */
            break;
        }
        if (w->created) backoff_ms = 100, warned = false;
        w->broken = true;
        if (st == MG_EGAP) continue; /* compaction: re-create at once from the new floor */
        /* One warning per break, then one every 30 s while etcd stays away. */
        if (!warned || mono_ms() - warned_at > 30000) {
            MG_WARN("etcd watch %s: %s after revision %" PRId64 ", reconnecting: %s", w->key,
                    warned ? "still broken" : "stream broke", atomic_load(&w->last_rev),
                    mg_err_msg());
            warned_at = mono_ms();
        } else {
            MG_DEBUG("etcd watch %s: reconnect failed: %s", w->key, mg_err_msg());
        }
        warned = true;
        struct timespec ts;
        mono_deadline(&ts, backoff_ms);
        pthread_mutex_lock(&w->mu);
        while (!atomic_load(&w->stop) && pthread_cond_timedwait(&w->cv, &w->mu, &ts) != ETIMEDOUT) {
        }
        pthread_mutex_unlock(&w->mu);
        backoff_ms = backoff_ms * 2 > 2000 ? 2000 : backoff_ms * 2;
    }
    return NULL;
}

static void watch_free(etcd_watch *w) {
    if (w->multi) curl_multi_cleanup(w->multi);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->line.p);
    free(w->scratch_k);
    free(w->scratch_v);
    free(w->key);
    free(w->end);
    free(w);
}

mg_status etcd_watch_start(etcd_client *c, const char *key, bool prefix, int64_t start_rev,
                           etcd_watch_cb cb, void *ud, etcd_watch **out) {
    *out = NULL;
    if (!c || !key || !cb)
        return MG_ERRF(MG_EINVAL, "etcd watch: client, key and callback are needed");
    etcd_watch *w = calloc(1, sizeof *w);
    if (!w) return MG_ERRF(MG_ENOMEM, "etcd: out of memory");
    pthread_mutex_init(&w->mu, NULL);
    mono_cond_init(&w->cv);
    w->c = c;
    w->cb = cb;
    w->ud = ud;
    w->key_len = strlen(key);
    w->key = strdup(key);
    if (prefix) {
        w->end = malloc(w->key_len + 1);
        if (w->end) w->end_len = etcd_prefix_end(key, w->key_len, w->end);
    }
    w->multi = curl_multi_init();
    atomic_store(&w->last_rev, start_rev > 0 ? start_rev - 1 : -1);
    if (!w->key || (prefix && !w->end) || !w->multi) {
        watch_free(w);
        return MG_ERRF(MG_ENOMEM, "etcd: out of memory");
    }
    if (pthread_create(&w->th, NULL, watch_main, w) != 0) {
        watch_free(w);
        return MG_ERRF(MG_ERR, "etcd watch: cannot start thread");
    }
    pthread_mutex_lock(&w->mu);
    while (!w->started) pthread_cond_wait(&w->cv, &w->mu);
    mg_status st = w->start_st;
    pthread_mutex_unlock(&w->mu);
    if (st != MG_OK) {
        pthread_join(w->th, NULL);
        char msg[512];
        snprintf(msg, sizeof msg, "%s", w->start_err);
        watch_free(w);
        return MG_ERRF(st, "%s", msg);
    }
    *out = w;
    return MG_OK;
}

void etcd_watch_stop(etcd_watch *w) {
    if (!w) return;
    atomic_store(&w->stop, true);
    pthread_mutex_lock(&w->mu);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    curl_multi_wakeup(w->multi);
    pthread_join(w->th, NULL);
    watch_free(w);
}

int64_t etcd_watch_revision(etcd_watch *w) {
    return atomic_load(&w->last_rev);
}

int etcd_watch_reconnects(etcd_watch *w) {
    return atomic_load(&w->reconnects);
}

/* ---------------------------------------------------------------------------------------------
 * waiting for a key */

typedef struct key_waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool got;
    mg_status st;
    etcd_kv kv;
} key_waiter;

static void on_key_event(void *ud, const etcd_event *ev) {
    key_waiter *kw = ud;
    if (ev->type != ETCD_EV_PUT) return;
    pthread_mutex_lock(&kw->mu);
    if (!kw->got) {
        kw->kv.key = malloc(ev->key_len + 1);
        kw->kv.value = malloc(ev->value_len + 1);
        if (kw->kv.key && kw->kv.value) {
            memcpy(kw->kv.key, ev->key, ev->key_len);
            kw->kv.key[ev->key_len] = 0;
            memcpy(kw->kv.value, ev->value, ev->value_len);
            kw->kv.value[ev->value_len] = 0;
            kw->kv.key_len = ev->key_len;
            kw->kv.value_len = ev->value_len;
            kw->kv.create_revision = ev->create_revision;
            kw->kv.mod_revision = ev->mod_revision;
            kw->kv.version = ev->version;
            kw->kv.lease = ev->lease;
            kw->st = MG_OK;
        } else {
            free(kw->kv.key);
            free(kw->kv.value);
            memset(&kw->kv, 0, sizeof kw->kv);
            kw->st = MG_ENOMEM;
        }
        kw->got = true;
        pthread_cond_broadcast(&kw->cv);
    }
    pthread_mutex_unlock(&kw->mu);
}

mg_status etcd_get_wait(etcd_client *c, const char *key, int timeout_ms, etcd_kvs *out) {
    int64_t t0 = mono_ms();
    mg_status st = etcd_get(c, key, out);
    if (st != MG_ENOTFOUND) return st;
    int64_t rev = out->revision;
    etcd_kvs_free(out);
    key_waiter kw = {.st = MG_OK};
    pthread_mutex_init(&kw.mu, NULL);
    mono_cond_init(&kw.cv);
    etcd_watch *w = NULL;
    st = etcd_watch_start(c, key, false, rev + 1, on_key_event, &kw, &w);
    if (st == MG_OK) {
        struct timespec ts;
        int64_t left = timeout_ms - (mono_ms() - t0);
        mono_deadline(&ts, left > 0 ? left : 0);
        pthread_mutex_lock(&kw.mu);
        while (!kw.got && pthread_cond_timedwait(&kw.cv, &kw.mu, &ts) != ETIMEDOUT) {
        }
        bool got = kw.got;
        pthread_mutex_unlock(&kw.mu);
        etcd_watch_stop(w); /* no callback after this */
        if (!got)
            st = MG_ERRF(MG_ETIMEOUT, "etcd at %s: key %s did not appear within %d ms", c->url, key,
                         timeout_ms);
        else if (kw.st != MG_OK)
            st = MG_ERRF(kw.st, "etcd: out of memory reading %s", key);
    }
    if (st == MG_OK) {
        out->kvs = malloc(sizeof *out->kvs);
        if (out->kvs) {
            out->kvs[0] = kw.kv;
            out->n = 1;
            out->revision = kw.kv.mod_revision;
        } else {
            st = MG_ERRF(MG_ENOMEM, "etcd: out of memory reading %s", key);
        }
    }
    if (st != MG_OK) {
        free(kw.kv.key);
        free(kw.kv.value);
    }
    pthread_cond_destroy(&kw.cv);
    pthread_mutex_destroy(&kw.mu);
    return st;
}
