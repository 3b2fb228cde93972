/* sha256.h - SHA-256 (FIPS 180-4), so that tests can prove a generated checkpoint is
 * byte-identical to the one the reference implementation loaded. Caller-owned context. */
#ifndef MG_SHA256_H
#define MG_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t fill;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, unsigned char out[32]);
/* Hash a whole file into 64 lowercase hex digits plus NUL. */
mg_status sha256_file(const char *path, char hex[65]);

#endif
