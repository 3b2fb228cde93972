/* stopstr.h - stop strings over streamed text, correct when a stop string is split across tokens.
 *
 * Data flow: detokenized text of the final channel -> stopstr_feed -> text that is safe to send
 * now. Text that could be the start of a stop string is held back until the next feed shows
 * whether it completes one; on a match the text before it is released and the rest dropped (the
 * stop string itself is not part of the output, as in OpenAI and vLLM).
 *
 * Threads: one matcher per request, one thread at a time. The stop strings are borrowed and must
 * outlive the matcher. */
#ifndef MG_FRONTEND_STOPSTR_H
#define MG_FRONTEND_STOPSTR_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

typedef struct stopstr {
    const char *const *s;
    const size_t *len;
    int n;
    char *buf; /* held text, then (after it) the text released by the last call */
    size_t held, cap;
    bool matched;
} stopstr;

void stopstr_init(stopstr *m, const char *const *stops, const size_t *lens, int n);
void stopstr_free(stopstr *m);
/* Feed text; *out and *out_len receive what may be sent now (valid until the next call). Returns
 * true once a stop string has matched (then *out is the text before it, and later feeds release
 * nothing). MG_ENOMEM is reported as a match-free empty release with the error detail set. */
bool stopstr_feed(stopstr *m, const char *text, size_t len, const char **out, size_t *out_len);
/* The stream ended without a match: release the held text. */
void stopstr_flush(stopstr *m, const char **out, size_t *out_len);

#endif
