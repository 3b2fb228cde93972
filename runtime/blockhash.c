/* blockhash.c - XXH3-64 block hashes and their parent chain. */
#include "blockhash.h"

#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t mg_block_local_hash(const uint32_t *tokens, size_t n) {
    /* Hash the ids as little-endian u32 whatever the host's byte order. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return XXH3_64bits_withSeed(tokens, n * sizeof(uint32_t), MG_BLOCK_HASH_SEED);
#else
    uint8_t buf[4 * 256];
    XXH3_state_t st;
    XXH3_64bits_reset_withSeed(&st, MG_BLOCK_HASH_SEED);
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < 256 && i < n; k++, i++) {
            uint32_t t = tokens[i];
            buf[4 * k] = t, buf[4 * k + 1] = t >> 8, buf[4 * k + 2] = t >> 16,
                    buf[4 * k + 3] = t >> 24;
        }
        XXH3_64bits_update(&st, buf, 4 * k);
    }
    return XXH3_64bits_digest(&st);
#endif
}

uint64_t mg_block_seq_hash(uint64_t parent, int has_parent, uint64_t local) {
    if (!has_parent) return local;
    /* Chain: XXH3 over (parent, local) as two little-endian u64, same seed. */
    uint8_t buf[16];
    for (int i = 0; i < 8; i++) {
        buf[i] = (uint8_t)(parent >> (8 * i));
        buf[8 + i] = (uint8_t)(local >> (8 * i));
    }
    return XXH3_64bits_withSeed(buf, sizeof(buf), MG_BLOCK_HASH_SEED);
}

size_t mg_block_hashes(const uint32_t *tokens, size_t n, size_t block_size, uint64_t *local,
                       uint64_t *seq) {
    size_t nb = block_size ? n / block_size : 0;
    uint64_t parent = 0;
    for (size_t b = 0; b < nb; b++) {
        uint64_t h = mg_block_local_hash(tokens + b * block_size, block_size);
        uint64_t s = mg_block_seq_hash(parent, b > 0, h);
        if (local) local[b] = h;
        if (seq) seq[b] = s;
        parent = s;
    }
    return nb;
}
