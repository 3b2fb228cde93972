/* etcd.h - an etcd v3 client over the JSON gateway (/v3/...), built on libcurl and jansson.
 *
 * Every process that takes part in serving talks to etcd through this client: discovery
 * (discovery.h) registers instance and model cards under a lease and watches them; worker rank 0
 * publishes the NCCL id. Keys and values travel base64-encoded; etcd sends 64-bit numbers as
 * JSON strings and leaves out fields at their zero value, so an absent field reads as 0/false.
 *
 * Errors: a server that cannot be reached gives MG_EUNAVAIL, a request that outlives its deadline
 * MG_ETIMEOUT, a missing lease or key MG_ENOTFOUND, an answer we cannot parse MG_EPROTO; the
 * thread's error detail (mg_err_msg) names the URL and the call.
 *
 * Threads: an etcd_client may be used from any number of threads at once (it keeps a small pool
 * of curl handles behind a mutex). Keep-alives and watches run on threads of their own and call
 * their callbacks there; a callback must not stop its own keep-alive or watch. */
#ifndef MG_ETCD_H
#define MG_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct etcd_client etcd_client;

#define ETCD_DEFAULT_TIMEOUT_MS 5000
#define ETCD_MAX_URL            400 /* characters of the base url */

/* url: "http://host:port" (a trailing '/' is ignored; copied; at most ETCD_MAX_URL characters,
 * else MG_EINVAL). timeout_ms: deadline of each unary call including connect, <= 0 for
 * ETCD_DEFAULT_TIMEOUT_MS. Makes no request. */
mg_status etcd_client_create(const char *url, int timeout_ms, etcd_client **out);
void etcd_client_destroy(etcd_client *c); /* after every keep-alive and watch on it stopped */
const char *etcd_client_url(const etcd_client *c);

/* One key-value pair. key and value are NUL-terminated copies (values may hold binary data and
 * NULs: use value_len). */
typedef struct etcd_kv {
    char *key;
    size_t key_len;
    char *value;
    size_t value_len;
    int64_t create_revision, mod_revision, version, lease;
} etcd_kv;

/* The result of a range read; owns its kvs. revision is the store revision the read saw: a watch
 * from revision + 1 continues exactly where the read left off. */
typedef struct etcd_kvs {
    etcd_kv *kvs;
    size_t n;
    int64_t revision;
} etcd_kvs;
void etcd_kvs_free(etcd_kvs *r); /* frees the contents; r itself is the caller's */

/* Put key = value (len bytes), attached to lease (0: none). */
mg_status etcd_put(etcd_client *c, const char *key, const void *value, size_t len, int64_t lease);
/* Put only if the key does not exist (one transaction); MG_EEXIST when it does. */
mg_status etcd_create(etcd_client *c, const char *key, const void *value, size_t len,
                      int64_t lease);
/* Read one key. MG_ENOTFOUND (out->n == 0, out->revision set) when absent. Free out either way. */
mg_status etcd_get(etcd_client *c, const char *key, etcd_kvs *out);
/* Read one key, waiting up to timeout_ms for it to be created (a get, then a watch from the
 * get's revision + 1): how ranks wait for the NCCL id that rank 0 publishes. MG_ETIMEOUT when it
 * does not appear in time. */
mg_status etcd_get_wait(etcd_client *c, const char *key, int timeout_ms, etcd_kvs *out);
/* Read every key that starts with prefix, sorted by key. Free out with etcd_kvs_free. */
mg_status etcd_get_prefix(etcd_client *c, const char *prefix, etcd_kvs *out);
/* Delete key, or every key starting with key when prefix. deleted (may be NULL): how many. */
mg_status etcd_delete(etcd_client *c, const char *key, bool prefix, int64_t *deleted);

/* Leases. A lease dies ttl_s after its last renewal; its keys go with it. */
mg_status etcd_lease_grant(etcd_client *c, int ttl_s, int64_t *lease);
/* Renew once. ttl_left (may be NULL) gets the TTL etcd granted; MG_ENOTFOUND when the lease has
 * expired or was revoked. */
mg_status etcd_lease_keepalive_once(etcd_client *c, int64_t lease, int *ttl_left);
/* Revoke: the lease and its keys are deleted now. MG_ENOTFOUND when it no longer exists. */
mg_status etcd_lease_revoke(etcd_client *c, int64_t lease);

/* A background thread renewing a lease every ttl_s/3 seconds. When etcd answers that the lease
 * is gone, lost(ud, lease) is called once on that thread and the thread ends. While etcd cannot
 * be reached it retries every second and logs; it does not report loss on time alone, because
 * etcd restores leases (with a fresh TTL) when it restarts, so only etcd's word says a lease is
 * gone. */
typedef struct etcd_keepalive etcd_keepalive;
typedef void (*etcd_lease_lost_cb)(void *ud, int64_t lease);
mg_status etcd_keepalive_start(etcd_client *c, int64_t lease, int ttl_s, etcd_lease_lost_cb lost,
                               void *ud, etcd_keepalive **out);
/* Stop and join the thread (does not revoke the lease). NULL is accepted. */
void etcd_keepalive_stop(etcd_keepalive *k);
bool etcd_keepalive_lost(const etcd_keepalive *k);

/* Watches. */
typedef enum etcd_event_type {
    ETCD_EV_PUT = 0,
    ETCD_EV_DELETE = 1,
    /* The revision to resume from was compacted away: events between the last one delivered and
     * mod_revision (the compaction revision) are lost. The watch goes on from mod_revision;
     * a caller that keeps state should re-read (etcd_get_prefix) and diff. */
    ETCD_EV_COMPACTED = 2,
} etcd_event_type;

/* Valid only during the callback. For DELETE, value is empty and mod_revision is the revision of
 * the deletion. */
typedef struct etcd_event {
    etcd_event_type type;
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
    int64_t mod_revision, create_revision, version, lease;
} etcd_event;
typedef void (*etcd_watch_cb)(void *ud, const etcd_event *ev);

typedef struct etcd_watch etcd_watch;
/* Watch key (or every key starting with key when prefix) from start_rev (<= 0: from now) on a
 * thread of its own; cb gets every event in revision order. Returns once etcd has confirmed the
 * watch (MG_EUNAVAIL / MG_ETIMEOUT if it cannot within the client's timeout).
 *
 * The stream is resumed: when the connection drops (etcd restarts, a proxy closes it) the thread
 * reconnects with backoff (100 ms doubling to 2 s) and re-creates the watch from the last
 * delivered revision + 1, so no event is lost or repeated across the break. */
mg_status etcd_watch_start(etcd_client *c, const char *key, bool prefix, int64_t start_rev,
                           etcd_watch_cb cb, void *ud, etcd_watch **out);
/* Stop and join the thread; no callback runs after it returns. NULL is accepted. */
void etcd_watch_stop(etcd_watch *w);
/* The revision of the last event delivered: before any, start_rev - 1, or for a watch from now
 * the store revision when etcd confirmed it. Any thread. */
int64_t etcd_watch_revision(etcd_watch *w);
/* How many times the stream was re-established after a break. Any thread. */
int etcd_watch_reconnects(etcd_watch *w);

/* Standard base64 with padding, as the gateway uses for keys and values. encode writes
 * ETCD_B64_LEN(n) bytes including the NUL and returns the length without it. decode accepts
 * padded or unpadded input, writes at most n*3/4 bytes to dst and returns MG_EPROTO on a
 * character outside the alphabet or a bad length. */
#define ETCD_B64_LEN(n) (((n) + 2) / 3 * 4 + 1)
size_t etcd_b64_encode(const void *src, size_t n, char *dst);
mg_status etcd_b64_decode(const char *src, size_t n, void *dst, size_t *out_len);

/* The range end that selects every key starting with prefix (the prefix with its last byte below
 * 0xff incremented, trailing 0xff bytes dropped; "\0" for an empty prefix, meaning all keys).
 * Writes up to n bytes to dst (dst needs n >= 1) and returns the length. */
size_t etcd_prefix_end(const char *prefix, size_t n, char *dst);

#endif
