/* blockhash.h - KV block hashing, identical in worker and router (DESIGN.md section 2).
 *
 * A block is block_size token ids. Its local hash is XXH3-64 (seed 1337) over the ids as
 * little-endian u32; its sequence hash chains the parent's sequence hash with the local hash, so
 * equal prefixes give equal chains on every machine. Only full blocks are hashed.
 *
 * This header is plain C with no dependency so the engine core can include it; the
 * implementation carries its own XXH3 (xxhash.h, header-only) when libxxhash is absent. */
#ifndef MG_BLOCKHASH_H
#define MG_BLOCKHASH_H

#include <stddef.h>
#include <stdint.h>

#define MG_BLOCK_HASH_SEED 1337u

/* Local hash of one block of n token ids. */
uint64_t mg_block_local_hash(const uint32_t *tokens, size_t n);
/* Sequence hash of a block from its parent's sequence hash (0 for the first block, with
 * has_parent = 0) and its local hash. */
uint64_t mg_block_seq_hash(uint64_t parent, int has_parent, uint64_t local);
/* Hash the full blocks of tokens[0..n): writes n / block_size local and sequence hashes (either
 * output may be NULL) and returns how many blocks were hashed. */
size_t mg_block_hashes(const uint32_t *tokens, size_t n, size_t block_size, uint64_t *local,
                       uint64_t *seq);

#endif
