/* golden.c - the golden file reader (golden.h). */
#include "golden.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* Up to max integers from the rest of a record (strtok: the line is consumed). */
static int read_ints(char *s, int32_t *out, int max) {
    int n = 0;
    for (char *t = strtok(s, " \n"); t && n < max; t = strtok(NULL, " \n")) out[n++] = atoi(t);
    return n;
}

/* One record into g; false when it is malformed. */
static bool record(golden *g, char *line) {
    int off = 0, a, b;
    if (!strncmp(line, "checkpoint ", 11)) {
        char name[64];
        if (sscanf(line, "checkpoint %63s %n", name, &off) >= 1 && off > 0) {
            snprintf(g->maker_args, sizeof(g->maker_args), "%s", line + off);
            g->maker_args[strcspn(g->maker_args, "\n")] = 0;
        }
        return true;
    }
    if (!strncmp(line, "oracle ", 7))
        return sscanf(line, "oracle %*s %31s %31s", g->dtype, g->device) == 2;
    if (!strncmp(line, "file ", 5)) {
        if (g->n_files >= GOLDEN_MAX_FILES) return false;
        int k = g->n_files++;
        return sscanf(line, "file %127s %64s", g->file[k], g->sha[k]) == 2;
    }
    if (sscanf(line, "vocab %d", &a) == 1) return g->vocab = a, true;
    if (!strncmp(line, "prompt ", 7)) {
        if (sscanf(line, "prompt %d %d %n", &a, &b, &off) != 2 || a != g->n_prompts ||
            a >= GOLDEN_MAX_PROMPTS || b < 1 || b > 100000 || !(g->prompt[a] = calloc(b, 4)))
            return false;
        g->plen[a] = b, g->n_prompts++;
        return read_ints(line + off, g->prompt[a], b) == b;
    }
    if (!strncmp(line, "row ", 4)) {
        if (g->n_rows >= GOLDEN_MAX_ROWS) return false;
        golden_row *r = &g->rows[g->n_rows++];
        if (sscanf(line, "row %d %d %lf %n", &r->prompt, &r->pos, &r->maxabs, &off) != 3)
            return false;
        for (char *t = strtok(line + off, " \n"); t && r->n < 96; t = strtok(NULL, " \n")) {
            int id;
            double v;
            if (strcmp(t, "|") && sscanf(t, "%d:%lf", &id, &v) == 2)
                r->id[r->n] = id, r->val[r->n++] = v;
        }
        return true;
    }
    if (!strncmp(line, "greedy ", 7)) {
        int k = g->n_greedy;
        if (k >= GOLDEN_MAX_PROMPTS ||
            sscanf(line, "greedy %d %d %lf %n", &g->gprompt[k], &g->glen[k], &g->gmargin[k],
                   &off) != 3 ||
            g->glen[k] < 1 || g->glen[k] > 100000 || !(g->gtok[k] = calloc(g->glen[k], 4)))
            return false;
        g->n_greedy++;
        return read_ints(line + off, g->gtok[k], g->glen[k]) == g->glen[k];
    }
    if (!strncmp(line, "margins ", 8)) { /* follows its greedy record */
        int k = g->n_greedy - 1;
        if (k < 0 || sscanf(line, "margins %d %d %n", &a, &b, &off) != 2 || a != g->gprompt[k] ||
            b != g->glen[k] || g->margins[k] || !(g->margins[k] = calloc(b, sizeof(double))))
            return false;
        int n = 0;
        for (char *t = strtok(line + off, " \n"); t && n < b; t = strtok(NULL, " \n"))
            g->margins[k][n++] = atof(t);
        g->n_margins[k] = n;
        return n == b;
    }
    return true; /* the header and records of later versions */
}

mg_status golden_load(const char *path, golden *g) {
    memset(g, 0, sizeof(*g));
    snprintf(g->dtype, sizeof(g->dtype), "float32"); /* goldens before the oracle record */
    snprintf(g->device, sizeof(g->device), "cpu");
    FILE *f = fopen(path, "r");
    if (!f) return MG_ERRF(MG_EIO, "golden %s: cannot open", path);
    char *line = NULL;
    size_t cap = 0;
    mg_status st = MG_OK;
    ssize_t len;
    for (int lineno = 1; !st && (len = getline(&line, &cap, f)) > 0; lineno++) {
        /* every record ends in a newline: a last line without one is a cut-off file */
        bool whole = line[len - 1] == '\n';
        if (!whole || !record(g, line))
            st = MG_ERRF(MG_EFORMAT, "golden %s:%d: %s record", path, lineno,
                         whole ? "malformed" : "cut-off");
    }
    free(line);
    fclose(f);
    if (st) return st;
    for (int k = 0; k < g->n_greedy; k++)
        if (g->gprompt[k] < 0 || g->gprompt[k] >= g->n_prompts)
            return MG_ERRF(MG_EFORMAT, "golden %s: greedy prompt %d: no such prompt", path,
                           g->gprompt[k]);
    for (int r = 0; r < g->n_rows; r++) {
        const golden_row *w = &g->rows[r];
        if (w->prompt < 0 || w->prompt >= g->n_prompts || w->pos < 0 ||
            w->pos >= g->plen[w->prompt] || w->n < 1)
            return MG_ERRF(MG_EFORMAT, "golden %s: row %d: bad prompt, position or values", path,
                           r);
    }
    if (!g->n_prompts || !g->n_files)
        return MG_ERRF(MG_EFORMAT, "golden %s: no prompts or no files", path);
    return MG_OK;
}

void golden_free(golden *g) {
    for (int i = 0; i < GOLDEN_MAX_PROMPTS; i++) {
        free(g->prompt[i]), free(g->gtok[i]), free(g->margins[i]);
        g->prompt[i] = g->gtok[i] = NULL, g->margins[i] = NULL;
    }
}
