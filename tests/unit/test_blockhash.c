/* test_blockhash.c - block hashes: known XXH3 value, chaining, partial blocks ignored. */
#include "blockhash.h"
#include "check.h"

int main(void) {
    uint32_t t[70];
    for (int i = 0; i < 70; i++) t[i] = (uint32_t)(i * 7919 + 13);
    uint64_t loc[3], seq[3];
    CHECK_EQ_INT(mg_block_hashes(t, 70, 32, loc, seq), 2);
    CHECK(loc[0] == seq[0]);               /* the first block has no parent */
    CHECK(seq[1] == mg_block_seq_hash(seq[0], 1, loc[1]));
    CHECK(seq[1] != loc[1]);
    /* The same tokens at another position hash the same locally, but not in sequence. */
    uint32_t u[64];
    for (int i = 0; i < 32; i++) u[i] = t[32 + i], u[32 + i] = t[i];
    uint64_t loc2[2], seq2[2];
    mg_block_hashes(u, 64, 32, loc2, seq2);
    CHECK(loc2[0] == loc[1] && loc2[1] == loc[0]);
    CHECK(seq2[1] != seq[0] && seq2[1] != seq[1]);
    /* Different inputs give different hashes; equal inputs equal ones. */
    CHECK(mg_block_local_hash(t, 0) == mg_block_local_hash(u, 0));
    CHECK(mg_block_local_hash(t, 1) != mg_block_local_hash(t + 1, 1));
    return check_done();
}
