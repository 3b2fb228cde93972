/* btok.h - the tokenizer the benchmark counts with: o200k (runtime/tok) or plain words.
 *
 * AIPerf counts input and output lengths by tokenizing text itself rather than trusting the
 * server's usage numbers; the benchmark does the same with the model's tokenizer (o200k_harmony
 * from a tiktoken ranks file or a checkpoint folder). "words" is a tokenizer of last resort for
 * when no ranks file is at hand: a token is a run of whitespace followed by a run of
 * non-whitespace, which is also how o200k splits plain English text into pre-tokens.
 *
 * A btok is immutable after btok_open and may be used from many threads at once. */
#ifndef MG_BENCH_BTOK_H
#define MG_BENCH_BTOK_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct btok btok;

/* spec: "words"; a tiktoken ranks file; a checkpoint folder (tokenizer.json); or NULL/"" or a
 * model name for the default lookup (MAGNETO_O200K_PATH, then the ranks file that
 * tests/setup-node.sh installs, then /usr/share/magneto/o200k_base.tiktoken). */
mg_status btok_open(const char *spec, btok **out);
void btok_destroy(btok *t);
const char *btok_name(const btok *t); /* "words" or the file it was loaded from */

size_t btok_count(const btok *t, const char *text, size_t len);
/* Token end offsets of text: (*ends)[i] is the byte offset just past token i. *ends is a
 * growable caller-owned buffer (may be NULL), *n gets the count. */
mg_status btok_bounds(const btok *t, const char *text, size_t len, uint32_t **ends, size_t *n,
                      size_t *cap);

#endif
