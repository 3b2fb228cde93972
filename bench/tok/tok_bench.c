/* tok-bench - single-threaded encode throughput of mg_tok on a corpus, for bench/RESULTS.md.
 *
 *   tok-bench [--ranks FILE] [--repeat N] [--records] CORPUS
 *
 * Encodes the whole corpus N times (default 5) as ordinary text, as tiktoken's encode_ordinary
 * does, and prints the best run's MB/s and tokens/s. --records splits the corpus at NUL bytes
 * (the golden corpus format) and encodes each record on its own, as the golden comparison does.
 * The ranks file defaults to MAGNETO_TOK_RANKS or the path configured at build time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tok.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *ranks = getenv("MAGNETO_TOK_RANKS"), *corpus = NULL;
    int repeat = 5, records = 0;
    if (!ranks) ranks = MG_TOK_RANKS;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ranks") == 0 && i + 1 < argc)
            ranks = argv[++i];
        else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (strcmp(argv[i], "--records") == 0)
            records = 1;
        else if (!corpus && argv[i][0] != '-')
            corpus = argv[i];
        else {
            fprintf(stderr, "usage: %s [--ranks FILE] [--repeat N] [--records] CORPUS\n", argv[0]);
            return 2;
        }
    }
    if (!corpus || repeat < 1) {
        fprintf(stderr, "usage: %s [--ranks FILE] [--repeat N] [--records] CORPUS\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(corpus, "rb");
    if (!f) {
        perror(corpus);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "%s: read failed\n", corpus);
        return 1;
    }
    fclose(f);
    tok_t *t;
    double t0 = now_s();
    if (tok_load_tiktoken(ranks, &t) != MG_OK) {
        fprintf(stderr, "tok-bench: %s\n", mg_err_msg());
        return 1;
    }
    double load_s = now_s() - t0;
    uint32_t *ids = NULL;
    size_t cap = 0, ntok = 0, bytes = 0;
    double best = 1e30;
    for (int r = 0; r < repeat; r++) {
        ntok = bytes = 0;
        double a = now_s();
        size_t p = 0;
        while (p < (size_t)size) {
            size_t e = (size_t)size;
            if (records) {
                char *z = memchr(text + p, 0, (size_t)size - p);
                if (z) e = (size_t)(z - text);
            }
            size_t n = 0;
            if (tok_encode(t, text + p, e - p, TOK_SPECIAL_TEXT, &ids, &n, &cap) != MG_OK) {
                fprintf(stderr, "tok-bench: %s\n", mg_err_msg());
                return 1;
            }
            ntok += n, bytes += e - p;
            p = e + 1;
        }
        double dt = now_s() - a;
        if (dt < best) best = dt;
    }
    printf("tok-bench: corpus %s, %zu bytes, %zu tokens, load %.2f s\n", corpus, bytes, ntok,
           load_s);
    printf("tokenizer_mb_s %.2f\n", bytes / best / 1e6);
    printf("tokenizer_tok_s %.0f\n", ntok / best);
    free(ids);
    free(text);
    tok_destroy(t);
    return 0;
}
