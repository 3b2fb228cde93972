/* mk-tokenizer-json - write a gpt-oss-style tokenizer.json, tokenizer_config.json and
 * special_tokens_map.json into a checkpoint folder, from an o200k_base.tiktoken ranks file.
 *
 *   mk-tokenizer-json RANKS_FILE OUT_DIR [--check]
 *
 * The vocabulary is o200k_harmony (the ranks plus the specials 199998..201087, named as gpt-oss
 * names them); merges are derived from the ranks. --check loads the folder back with
 * tok_load_dir and compares every token's bytes with the ranks file's. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "tok.h"

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "--check") != 0)) {
        fprintf(stderr, "usage: %s RANKS_FILE OUT_DIR [--check]\n", argv[0]);
        return 2;
    }
    tok_t *t = NULL, *back = NULL;
    if (tok_load_tiktoken(argv[1], &t) != MG_OK) {
        fprintf(stderr, "mk-tokenizer-json: %s\n", mg_err_msg());
        return 1;
    }
    mkdir(argv[2], 0755);
    int rc = 0;
    if (tok_write_dir(t, argv[2]) != MG_OK) {
        fprintf(stderr, "mk-tokenizer-json: %s\n", mg_err_msg());
        rc = 1;
    } else if (argc == 4) {
        if (tok_load_dir(argv[2], &back) != MG_OK) {
            fprintf(stderr, "mk-tokenizer-json: reading back: %s\n", mg_err_msg());
            rc = 1;
        } else if (tok_vocab_size(back) != tok_vocab_size(t)) {
            fprintf(stderr, "mk-tokenizer-json: vocab %u read back, %u written\n",
                    tok_vocab_size(back), tok_vocab_size(t));
            rc = 1;
        } else {
            for (uint32_t id = 0; id < tok_vocab_size(t) && rc == 0; id++) {
                size_t a = 0, b = 0;
                const char *pa = tok_piece(t, id, &a), *pb = tok_piece(back, id, &b);
                if (!pa != !pb || a != b || (pa && memcmp(pa, pb, a) != 0) ||
                    tok_is_special(t, id) != tok_is_special(back, id)) {
                    fprintf(stderr, "mk-tokenizer-json: token %u differs when read back\n", id);
                    rc = 1;
                }
            }
        }
    }
    if (rc == 0)
        printf("wrote %s/tokenizer.json (%u ids)%s\n", argv[2], tok_vocab_size(t),
               argc == 4 ? ", read back identical" : "");
    tok_destroy(back);
    tok_destroy(t);
    return rc;
}
