/* golden.h - reader of the golden files that tools/oracle/hf_golden.py writes from Hugging Face
 * transformers: the checkpoint's maker arguments and file hashes, the oracle's dtype, prompts,
 * reference logits at chosen positions (top 16 and 64 samples) and greedy continuations with
 * HF's per-step top-2 margins. Read by tests/unit/test_cpu_golden.c and worker/cuda/cuda_agree.c.
 *
 * Format (one record per line, each ending in a newline):
 *   magneto-golden 1 | checkpoint NAME maker-args... | oracle torch DTYPE DEVICE
 *   file NAME SHA256 | vocab V | prompt I N tok... | row I POS MAXABS idx:val ... | idx:val ...
 *   greedy I N MARGIN tok... | margins I N m...   (after its greedy record; optional) */
#ifndef MG_GOLDEN_H
#define MG_GOLDEN_H

#include <stdint.h>

#include "status.h"

enum { GOLDEN_MAX_PROMPTS = 16, GOLDEN_MAX_ROWS = 64, GOLDEN_MAX_FILES = 16 };

typedef struct golden_row {
    int prompt, pos; /* prompt index, position in it */
    double maxabs;   /* HF's largest |logit| in the row */
    int n;
    int32_t id[96]; /* top 16, then 64 samples */
    double val[96];
} golden_row;

typedef struct golden {
    char maker_args[256];
    char dtype[32], device[32]; /* the oracle's ("oracle" record; absent: float32 on cpu) */
    int n_files;
    char file[GOLDEN_MAX_FILES][128], sha[GOLDEN_MAX_FILES][65];
    int vocab, n_prompts, n_rows, n_greedy;
    int plen[GOLDEN_MAX_PROMPTS];
    int32_t *prompt[GOLDEN_MAX_PROMPTS];
    golden_row rows[GOLDEN_MAX_ROWS];
    int gprompt[GOLDEN_MAX_PROMPTS], glen[GOLDEN_MAX_PROMPTS]; /* greedy runs */
    double gmargin[GOLDEN_MAX_PROMPTS]; /* smallest (top1 - top2) seen in the run */
    int32_t *gtok[GOLDEN_MAX_PROMPTS];
    int n_margins[GOLDEN_MAX_PROMPTS];
    double *margins[GOLDEN_MAX_PROMPTS]; /* per step, (top1 - top2) / max |logit|; NULL: absent */
} golden;

/* Fill g (caller-owned; golden_free releases what it allocates, also after a failure). Fails
 * with MG_EFORMAT naming the file and line on a malformed or cut-off record, a row or greedy
 * run that names no prompt, or a file without prompts or hashes; MG_EIO when it cannot open. */
mg_status golden_load(const char *path, golden *g);
void golden_free(golden *g);

#endif
