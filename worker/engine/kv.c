/* kv.c - KV block pool: reference counts, a hash -> block table for prefix reuse, a stack of
 * plain free blocks and an LRU list of idle cached blocks.
 *
 * Invariants: ref > 0 <=> active; an idle block is on the plain stack iff it has no hash, on the
 * LRU list iff it has one; the hash table holds exactly the hashed blocks. Everything is sized at
 * creation, so no call allocates. */
#include "kv.h"

#include <stdlib.h>
#include <string.h>

typedef struct kv_block {
    uint64_t hash;
    int32_t ref;
    int32_t prev, next; /* LRU links, -1 at the ends */
    uint8_t hashed;
} kv_block;

struct mg_kv_pool {
    int n, bs;
    bool reuse;
    kv_block *b;
    int32_t *plain; /* stack of idle unhashed blocks */
    int n_plain;
    int32_t lru_head, lru_tail; /* head = least recently released = first evicted */
    int n_lru;
    /* open addressing, linear probing; slot empty when val < 0 */
    uint64_t *hkey;
    int32_t *hval;
    uint32_t hmask;
    int n_active, n_hashed;
    uint64_t lookups, hits;
    uint64_t next_event;
    mg_kv_event_cb cb;
    void *cb_ud;
    uint64_t *ev_hash; /* (n) event scratch */
};

static uint32_t slot_of(const mg_kv_pool *p, uint64_t h) {
    /* The hashes are XXH3 outputs already; a multiply spreads them anyway in case a caller
     * passes structured values (tests do). */
    return (uint32_t)((h * 0x9E3779B97F4A7C15ull) >> 32) & p->hmask;
}

static int32_t ht_get(const mg_kv_pool *p, uint64_t h) {
    for (uint32_t i = slot_of(p, h);; i = (i + 1) & p->hmask) {
        if (p->hval[i] < 0) return -1;
        if (p->hkey[i] == h) return p->hval[i];
    }
}

static void ht_put(mg_kv_pool *p, uint64_t h, int32_t v) {
    uint32_t i = slot_of(p, h);
    while (p->hval[i] >= 0) i = (i + 1) & p->hmask;
    p->hkey[i] = h;
    p->hval[i] = v;
}

static void ht_del(mg_kv_pool *p, uint64_t h) {
    uint32_t i = slot_of(p, h);
    while (p->hval[i] >= 0 && p->hkey[i] != h) i = (i + 1) & p->hmask;
    if (p->hval[i] < 0) return;
    /* Backward-shift deletion keeps every probe chain unbroken without tombstones. */
    uint32_t j = i;
    for (;;) {
        p->hval[i] = -1;
        for (;;) {
            j = (j + 1) & p->hmask;
            if (p->hval[j] < 0) return;
            uint32_t k = slot_of(p, p->hkey[j]);
            /* Move j back to i unless its home k lies cyclically in (i, j]. */
            if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
            break;
        }
        p->hkey[i] = p->hkey[j];
        p->hval[i] = p->hval[j];
        i = j;
    }
}

static void lru_unlink(mg_kv_pool *p, int32_t id) {
    kv_block *b = &p->b[id];
    if (b->prev >= 0)
        p->b[b->prev].next = b->next;
    else
        p->lru_head = b->next;
    if (b->next >= 0)
        p->b[b->next].prev = b->prev;
    else
        p->lru_tail = b->prev;
    b->prev = b->next = -1;
    p->n_lru--;
}

static void lru_push_tail(mg_kv_pool *p, int32_t id) {
    kv_block *b = &p->b[id];
    b->prev = p->lru_tail;
    b->next = -1;
    if (p->lru_tail >= 0)
        p->b[p->lru_tail].next = id;
    else
        p->lru_head = id;
    p->lru_tail = id;
    p->n_lru++;
}

static void emit(mg_kv_pool *p, mg_kv_event_kind kind, bool has_parent, uint64_t parent,
                 const uint64_t *hashes, const uint64_t *locals, int n) {
    mg_kv_event ev = {.event_id = ++p->next_event,
                      .kind = kind,
                      .has_parent = has_parent,
                      .parent_hash = has_parent ? parent : 0,
                      .n = n,
                      .block_hashes = hashes,
                      .local_hashes = locals};
    if (p->cb) p->cb(p->cb_ud, &ev);
}

mg_status kv_pool_create(int num_blocks, int block_size, bool enable_reuse, mg_kv_pool **out) {
    *out = NULL;
    if (num_blocks < 1 || block_size < 1)
        return MG_ERRF(MG_EINVAL, "kv pool: num_blocks %d and block_size %d must be >= 1",
                       num_blocks, block_size);
    /* The hash table has a power of two >= 2 * num_blocks slots in 32 bits. */
    if (num_blocks > (1 << 30))
        return MG_ERRF(MG_EINVAL, "kv pool: num_blocks %d exceeds 2^30", num_blocks);
    mg_kv_pool *p = calloc(1, sizeof(*p));
    if (!p) return MG_ERRF(MG_ENOMEM, "kv pool: out of memory");
    p->n = num_blocks;
    p->bs = block_size;
    p->reuse = enable_reuse;
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)num_blocks) cap <<= 1;
    p->hmask = cap - 1;
    p->b = calloc(num_blocks, sizeof(kv_block));
    p->plain = malloc(sizeof(int32_t) * num_blocks);
    p->hkey = malloc(sizeof(uint64_t) * cap);
    p->hval = malloc(sizeof(int32_t) * cap);
    p->ev_hash = malloc(sizeof(uint64_t) * num_blocks);
    if (!p->b || !p->plain || !p->hkey || !p->hval || !p->ev_hash) {
        kv_pool_destroy(p);
        return MG_ERRF(MG_ENOMEM, "kv pool: out of memory for %d blocks", num_blocks);
    }
    for (uint32_t i = 0; i < cap; i++) p->hval[i] = -1;
    /* The stack hands out low ids first, which keeps small tests readable. */
    for (int i = 0; i < num_blocks; i++) {
        p->b[i].prev = p->b[i].next = -1;
        p->plain[i] = num_blocks - 1 - i;
    }
    p->n_plain = num_blocks;
    p->lru_head = p->lru_tail = -1;
    *out = p;
    return MG_OK;
}

void kv_pool_destroy(mg_kv_pool *p) {
    if (!p) return;
    free(p->b);
    free(p->plain);
    free(p->hkey);
    free(p->hval);
    free(p->ev_hash);
    free(p);
}

void kv_pool_set_event_cb(mg_kv_pool *p, mg_kv_event_cb cb, void *ud) {
    p->cb = cb;
    p->cb_ud = ud;
}

int kv_block_size(const mg_kv_pool *p) {
    return p->bs;
}
int kv_num_blocks(const mg_kv_pool *p) {
    return p->n;
}
int kv_num_free(const mg_kv_pool *p) {
    return p->n_plain + p->n_lru;
}
int kv_ref(const mg_kv_pool *p, int32_t block) {
    return (block >= 0 && block < p->n) ? p->b[block].ref : -1;
}

mg_kv_stats kv_stats(const mg_kv_pool *p) {
    mg_kv_stats s = {.total_blocks = p->n,
                     .active_blocks = p->n_active,
                     .cached_blocks = p->n_hashed,
                     .free_blocks = kv_num_free(p),
                     .lookup_blocks = p->lookups,
                     .hit_blocks = p->hits};
    s.usage = (double)p->n_active / p->n;
    s.hit_rate = p->lookups ? (double)p->hits / p->lookups : 0.0;
    return s;
}

int kv_match(const mg_kv_pool *p, const uint64_t *seq_hashes, int n, int *n_idle) {
    int m = 0, idle = 0;
    if (p->reuse) {
        for (; m < n; m++) {
            int32_t id = ht_get(p, seq_hashes[m]);
            if (id < 0) break;
            if (p->b[id].ref == 0) idle++;
        }
    }
    if (n_idle) *n_idle = idle;
    return m;
}

bool kv_can_allocate(const mg_kv_pool *p, int n_idle_hits, int n_new) {
    return n_idle_hits + n_new <= kv_num_free(p);
}

void kv_acquire(mg_kv_pool *p, const uint64_t *seq_hashes, int n, int32_t *out) {
    for (int i = 0; i < n; i++) {
        int32_t id = ht_get(p, seq_hashes[i]);
        /* The caller asked kv_match first; a miss here is a scheduler bug. */
        if (id < 0) abort();
        kv_block *b = &p->b[id];
        if (b->ref++ == 0) {
            lru_unlink(p, id);
            p->n_active++;
        }
        out[i] = id;
    }
}

mg_status kv_allocate(mg_kv_pool *p, int n, int32_t *out) {
    if (n > kv_num_free(p))
        return MG_ERRF(MG_EFULL, "kv pool: %d blocks wanted, %d free", n, kv_num_free(p));
    int n_evicted = 0;
    for (int i = 0; i < n; i++) {
        int32_t id;
        if (p->n_plain > 0) {
            id = p->plain[--p->n_plain];
        } else {
            id = p->lru_head;
            lru_unlink(p, id);
            kv_block *b = &p->b[id];
            ht_del(p, b->hash);
            b->hashed = 0;
            p->n_hashed--;
            p->ev_hash[n_evicted++] = b->hash;
        }
        p->b[id].ref = 1;
        p->n_active++;
        out[i] = id;
    }
    if (n_evicted) emit(p, MG_KV_REMOVED, false, 0, p->ev_hash, NULL, n_evicted);
    return MG_OK;
}

void kv_commit(mg_kv_pool *p, const int32_t *blocks, const uint64_t *seq_hashes,
               const uint64_t *local_hashes, int n, bool has_parent, uint64_t parent) {
    if (!p->reuse) return;
    int run = -1; /* start of the current run of newly registered blocks */
    for (int i = 0; i <= n; i++) {
        bool reg = false;
        if (i < n) {
            kv_block *b = &p->b[blocks[i]];
            if (!b->hashed && ht_get(p, seq_hashes[i]) < 0) {
                b->hashed = 1;
                b->hash = seq_hashes[i];
                ht_put(p, seq_hashes[i], blocks[i]);
                p->n_hashed++;
                reg = true;
            }
        }
        if (reg && run < 0) run = i;
        if (!reg && run >= 0) {
            /* One event per unbroken run, so its parent link is right even around a block that
             * was already cached under another id. */
            bool hp = run > 0 || has_parent;
            uint64_t par = run > 0 ? seq_hashes[run - 1] : parent;
            emit(p, MG_KV_STORED, hp, par, seq_hashes + run,
                 local_hashes ? local_hashes + run : NULL, i - run);
            run = -1;
        }
    }
}

void kv_release(mg_kv_pool *p, const int32_t *blocks, int n) {
    for (int i = n - 1; i >= 0; i--) {
        int32_t id = blocks[i];
        kv_block *b = &p->b[id];
        if (b->ref <= 0) abort(); /* double release: a scheduler bug, never silently absorbed */
        if (--b->ref > 0) continue;
        p->n_active--;
        if (b->hashed)
            lru_push_tail(p, id);
        else
            p->plain[p->n_plain++] = id;
    }
}

void kv_clear(mg_kv_pool *p) {
    for (int id = 0; id < p->n; id++) {
        kv_block *b = &p->b[id];
        if (!b->hashed) continue;
        if (b->ref == 0) {
            lru_unlink(p, id);
            p->plain[p->n_plain++] = id;
        }
        b->hashed = 0;
    }
    for (uint32_t i = 0; i <= p->hmask; i++) p->hval[i] = -1;
    p->n_hashed = 0;
    emit(p, MG_KV_CLEARED, false, 0, NULL, NULL, 0);
}

void kv_note_lookup(mg_kv_pool *p, int n_blocks, int n_hit) {
    p->lookups += n_blocks;
    p->hits += n_hit;
}

int64_t kv_window_blocks_needed(int window, int block_size, int64_t max_seqs, int64_t max_tokens) {
    if (window < 1 || block_size < 1 || max_seqs < 1 || max_tokens < 1) return 0;
    int64_t per_seq = (window + block_size - 1) / block_size + 2;
    return max_seqs * per_seq + (max_tokens + block_size - 1) / block_size;
}

bool kv_window_split(uint64_t budget_bytes, uint64_t full_bytes, uint64_t window_bytes, int window,
                     int block_size, int64_t max_seqs, int64_t max_tokens, int *full_blocks,
                     int *window_blocks) {
    if (!full_bytes || !window_bytes) return false;
    int64_t need = kv_window_blocks_needed(window, block_size, max_seqs, max_tokens);
    if (need < 1) return false;
    need += (need + 7) / 8;
    if ((double)need * window_bytes >= (double)budget_bytes) return false;
    uint64_t nfull = (budget_bytes - (uint64_t)need * window_bytes) / full_bytes;
    uint64_t single = budget_bytes / (full_bytes + window_bytes);
    if (nfull <= single) return false;
    if (nfull > (1u << 30)) nfull = 1u << 30; /* kv_pool_create's limit */
    if (need > (1 << 30)) return false;
    *full_blocks = (int)nfull;
    *window_blocks = (int)need;
    return true;
}
