/* tok_json.c - the Hugging Face files of a checkpoint folder: read tokenizer.json (and check
 * tokenizer_config.json / special_tokens_map.json), and write all three for a vocabulary.
 *
 * tokenizer.json holds a byte-level BPE model: model.vocab maps byte-level strings (GPT-2's
 * bytes_to_unicode: printable bytes stand for themselves, the rest for U+0100 + k) to ids, which
 * for a tiktoken-derived vocabulary are the ranks; model.merges are implied by the ranks and are
 * not needed to encode exactly as tiktoken does. added_tokens carry the specials.
 * Reading needs jansson (present with the serving stack); without it tok_load_dir says so.
 * Writing uses stdio alone, so the checkpoint maker needs nothing more. */
#include "tok_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#ifdef MG_TOK_HAVE_JANSSON
#include <jansson.h>
#endif

/* GPT-2's byte <-> code point map. */
static void byte_map(uint16_t byte_to_cp[256]) {
    int k = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
            byte_to_cp[b] = (uint16_t)b;
        else
            byte_to_cp[b] = (uint16_t)(256 + k++);
    }
}

/* ---------------------------------------------------------------- reading */

#ifdef MG_TOK_HAVE_JANSSON

static json_t *load_json(const char *dir, const char *name, bool required, size_t flags,
                         mg_status *st) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *st = MG_OK;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT && !required) return NULL;
        *st = MG_ERRF(errno == ENOENT ? MG_ENOTFOUND : MG_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    json_error_t err;
    json_t *j = json_loadf(f, flags, &err);
    fclose(f);
    if (!j) *st = MG_ERRF(MG_EFORMAT, "%s:%d: %s", path, err.line, err.text);
    return j;
}

/* Decode a byte-level string into bytes; returns the length or -1. */
static long bytelevel_decode(const char *s, const int16_t cp_to_byte[512], uint8_t *out,
                             size_t cap) {
    const uint8_t *p = (const uint8_t *)s;
    size_t n = 0;
    while (*p) {
        uint32_t cp;
        if (*p < 0x80) {
            cp = *p++;
        } else if ((*p & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) {
            cp = ((uint32_t)(*p & 0x1F) << 6) | (p[1] & 0x3F);
            p += 2;
        } else {
            return -1;
        }
        if (cp >= 512 || cp_to_byte[cp] < 0 || n >= cap) return -1;
        out[n++] = (uint8_t)cp_to_byte[cp];
    }
    return (long)n;
}

/* The named special token of a config entry (a string, or an object with "content"). */
static const char *token_name(json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static mg_status check_named_tokens(const tok_t *t, json_t *j, const char *dir, const char *name) {
    static const char *keys[] = {"bos_token", "eos_token", "pad_token", "unk_token"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(j, keys[i]);
        if (!v || json_is_null(v)) continue;
        const char *tokname = token_name(v);
        uint32_t id;
        if (!tokname) return MG_ERRF(MG_EFORMAT, "%s/%s: %s is not a string", dir, name, keys[i]);
        if (tok_special_id(t, tokname, &id) != MG_OK)
            return MG_ERRF(MG_EFORMAT, "%s/%s: %s \"%s\" is not a special token of tokenizer.json",
                           dir, name, keys[i], tokname);
    }
    return MG_OK;
}

static mg_status check_pretokenizer(json_t *root, const char *path) {
    json_t *pre = json_object_get(root, "pre_tokenizer");
    json_t *list = json_object_get(pre, "pretokenizers");
    const char *regex = NULL;
    if (json_is_array(list)) {
        size_t i;
        json_t *p;
        json_array_foreach(list, i, p) {
            if (json_is_string(json_object_get(p, "type")) &&
                strcmp(json_string_value(json_object_get(p, "type")), "Split") == 0)
                regex = json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex"));
        }
    } else if (pre) {
        regex = json_string_value(json_object_get(json_object_get(pre, "pattern"), "Regex"));
    }
    if (!regex)
        return MG_ERRF(MG_EUNSUPPORTED,
                       "%s: pre_tokenizer has no Split regex; only o200k's pre-tokenizer is "
                       "supported",
                       path);
    if (strcmp(regex, tok_o200k_pattern) != 0)
        MG_WARN("%s: pre_tokenizer regex differs from o200k's; encoding with o200k's", path);
    return MG_OK;
}

mg_status tok_load_dir(const char *dir, tok_t **out) {
    if (!dir || !out) return MG_ERRF(MG_EINVAL, "tok_load_dir: NULL argument");
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    mg_status st;
    json_t *root = load_json(dir, "tokenizer.json", true, 0, &st);
    if (!root) return st;
    tok_builder *b = tok_builder_create();
    int16_t cp_to_byte[512];
    uint16_t byte_to_cp[256];
    uint8_t *is_added = NULL;
    byte_map(byte_to_cp);
    memset(cp_to_byte, 0xFF, sizeof cp_to_byte);
    for (int i = 0; i < 256; i++) cp_to_byte[byte_to_cp[i]] = (int16_t)i;

    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *added = json_object_get(root, "added_tokens");
    if (!b) {
        st = MG_ERRF(MG_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if (!json_is_object(model) || !json_is_string(json_object_get(model, "type")) ||
        strcmp(json_string_value(json_object_get(model, "type")), "BPE") != 0) {
        st = MG_ERRF(MG_EUNSUPPORTED, "%s: model.type must be \"BPE\"", path);
        goto done;
    }
    if (!json_is_object(vocab)) {
        st = MG_ERRF(MG_EFORMAT, "%s: model.vocab is missing or not an object", path);
        goto done;
    }
    if ((st = check_pretokenizer(root, path))) goto done;
    is_added = calloc(TOK_VOCAB_SIZE * 4, 1);
    if (!is_added) {
        st = MG_ERRF(MG_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if (added && !json_is_array(added)) {
        st = MG_ERRF(MG_EFORMAT, "%s: added_tokens is not an array", path);
        goto done;
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        json_t *id = json_object_get(a, "id");
        const char *content = json_string_value(json_object_get(a, "content"));
        if (!json_is_integer(id) || !content || json_integer_value(id) < 0 ||
            json_integer_value(id) >= TOK_VOCAB_SIZE * 4) {
            st = MG_ERRF(MG_EFORMAT, "%s: added_tokens[%zu] needs an integer id and a content",
                         path, i);
            goto done;
        }
        is_added[json_integer_value(id)] = 1;
        if ((st = tok_builder_special(b, content, (uint32_t)json_integer_value(id)))) goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= TOK_VOCAB_SIZE * 4) {
            st = MG_ERRF(MG_EFORMAT, "%s: model.vocab[\"%s\"] is not a valid id", path, key);
            goto done;
        }
        uint32_t id = (uint32_t)json_integer_value(v);
        if (is_added[id]) continue; /* a special listed in both places */
        uint8_t bytes[1024];
        long n = bytelevel_decode(key, cp_to_byte, bytes, sizeof bytes);
        if (n <= 0) {
            st = MG_ERRF(MG_EFORMAT, "%s: model.vocab key \"%s\" (id %u) is not byte-level", path,
                         key, id);
            goto done;
        }
        if ((st = tok_builder_add(b, bytes, (size_t)n, id))) goto done;
    }
    tok_t *t;
    if ((st = tok_builder_finish(b, path, &t))) goto done;
    static const char *side[] = {"tokenizer_config.json", "special_tokens_map.json"};
    for (int k = 0; k < 2; k++) {
        /* model_max_length (1e30) is beyond jansson's integers: read numbers as reals. */
        json_t *j = load_json(dir, side[k], false, JSON_DECODE_INT_AS_REAL, &st);
        if (st == MG_OK && j) st = check_named_tokens(t, j, dir, side[k]);
        json_decref(j);
        if (st) {
            tok_destroy(t);
            goto done;
        }
    }
    *out = t;
done:
    free(is_added);
    tok_builder_destroy(b);
    json_decref(root);
    return st;
}

#else

mg_status tok_load_dir(const char *dir, tok_t **out) {
    if (out) *out = NULL;
    return MG_ERRF(MG_EUNSUPPORTED,
                   "%s: reading tokenizer.json needs jansson, which this build lacks (use "
                   "tok_load_tiktoken)",
                   dir ? dir : "(null)");
}

#endif

/* ---------------------------------------------------------------- writing */

/* A JSON string of raw bytes (valid UTF-8 assumed, as for special names). */
static void put_json_str(FILE *f, const uint8_t *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* Bytes as a byte-level string (no quotes). */
static void put_bytelevel(FILE *f, const uint16_t map[256], const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint16_t cp = map[s[i]];
        if (cp == '"' || cp == '\\') {
            fprintf(f, "\\%c", cp);
        } else if (cp < 0x80) {
            fputc(cp, f);
        } else { /* all code points are below U+0800 */
            fputc(0xC0 | (cp >> 6), f);
            fputc(0x80 | (cp & 0x3F), f);
        }
    }
}

static FILE *open_out(const char *dir, const char *name, char *path, size_t cap, mg_status *st) {
    snprintf(path, cap, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    *st = f ? MG_OK : MG_ERRF(MG_EIO, "%s: %s", path, strerror(errno));
    return f;
}

static mg_status close_out(FILE *f, const char *path) {
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return MG_ERRF(MG_EIO, "%s: write failed", path);
    return MG_OK;
}

/* The text of special id as a NUL-terminated copy in buf, or NULL when id is not special. */
static const char *special_name(const tok_t *t, uint32_t id, char *buf, size_t cap) {
    size_t n;
    const char *p = tok_piece(t, id, &n);
    if (!tok_is_special(t, id) || n >= cap) return NULL;
    memcpy(buf, p, n);
    buf[n] = 0;
    return buf;
}

mg_status tok_write_dir(const tok_t *t, const char *dir) {
    if (!t || !dir) return MG_ERRF(MG_EINVAL, "tok_write_dir: NULL argument");
    uint16_t map[256];
    byte_map(map);
    char path[4096];
    mg_status st;

    FILE *f = open_out(dir, "tokenizer.json", path, sizeof path, &st);
    if (!f) return st;
    fputs("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n"
          "  \"added_tokens\": [",
          f);
    int first = 1;
    for (uint32_t id = 0; id < t->vocab; id++) {
        if (t->kind[id] != TOK_KIND_SPECIAL) continue;
        fprintf(f, "%s\n    {\"id\": %u, \"content\": ", first ? "" : ",", id);
        put_json_str(f, t->pool + t->off[id], t->off[id + 1] - t->off[id]);
        fputs(", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
              "\"normalized\": false, \"special\": true}",
              f);
        first = 0;
    }
    fputs("\n  ],\n  \"normalizer\": null,\n  \"pre_tokenizer\": {\"type\": \"Sequence\", "
          "\"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": ",
          f);
    put_json_str(f, (const uint8_t *)tok_o200k_pattern, strlen(tok_o200k_pattern));
    fputs("}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "
          "\"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}]},\n"
          "  \"post_processor\": null,\n"
          "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
          "\"trim_offsets\": true, \"use_regex\": true},\n"
          "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
          "    \"unk_token\": null,\n    \"continuing_subword_prefix\": null,\n"
          "    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
          "    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n    \"vocab\": {",
          f);
    for (uint32_t r = 0; r < t->n_ranks; r++) {
        fputs(r ? ",\n      \"" : "\n      \"", f);
        put_bytelevel(f, map, t->pool + t->off[r], t->off[r + 1] - t->off[r]);
        fprintf(f, "\": %u", r);
    }
    fputs("\n    },\n    \"merges\": [", f);
    first = 1;
    for (uint32_t r = 0; r < t->n_ranks && st == MG_OK; r++) {
        size_t n = t->off[r + 1] - t->off[r];
        if (n < 2) continue;
        uint32_t left;
        st = tok_merge_split(t, r, &left);
        if (st) break;
        const uint8_t *s = t->pool + t->off[r];
        fputs(first ? "\n      [\"" : ",\n      [\"", f);
        put_bytelevel(f, map, s, left);
        fputs("\", \"", f);
        put_bytelevel(f, map, s + left, n - left);
        fputs("\"]", f);
        first = 0;
    }
    fputs("\n    ]\n  }\n}\n", f);
    mg_status cst = close_out(f, path);
    if (st) return st;
    if (cst) return cst;

    char bos_buf[64], eos_buf[64], pad_buf[64];
    const char *bos = special_name(t, TOK_STARTOFTEXT, bos_buf, sizeof bos_buf);
    const char *eos = special_name(t, TOK_RETURN, eos_buf, sizeof eos_buf);
    const char *pad = special_name(t, TOK_ENDOFTEXT, pad_buf, sizeof pad_buf);

    f = open_out(dir, "tokenizer_config.json", path, sizeof path, &st);
    if (!f) return st;
    fputs("{\n  \"added_tokens_decoder\": {", f);
    first = 1;
    for (uint32_t id = 0; id < t->vocab; id++) {
        if (t->kind[id] != TOK_KIND_SPECIAL) continue;
        fprintf(f, "%s\n    \"%u\": {\"content\": ", first ? "" : ",", id);
        put_json_str(f, t->pool + t->off[id], t->off[id + 1] - t->off[id]);
        fputs(", \"lstrip\": false, \"normalized\": false, \"rstrip\": false, "
              "\"single_word\": false, \"special\": true}",
              f);
        first = 0;
    }
    fputs("\n  },\n", f);
    if (bos) fprintf(f, "  \"bos_token\": \"%s\",\n", bos);
    if (eos) fprintf(f, "  \"eos_token\": \"%s\",\n", eos);
    if (pad) fprintf(f, "  \"pad_token\": \"%s\",\n", pad);
    fputs("  \"clean_up_tokenization_spaces\": false,\n"
          "  \"model_input_names\": [\"input_ids\", \"attention_mask\"],\n"
          "  \"model_max_length\": 1000000000000000019884624838656,\n"
          "  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n",
          f);
    if ((st = close_out(f, path))) return st;

    f = open_out(dir, "special_tokens_map.json", path, sizeof path, &st);
    if (!f) return st;
    fputs("{\n", f);
    first = 1;
    const char *names[] = {"bos_token", "eos_token", "pad_token"}, *vals[] = {bos, eos, pad};
    for (int k = 0; k < 3; k++) {
        if (!vals[k]) continue;
        fprintf(f,
                "%s  \"%s\": {\"content\": \"%s\", \"lstrip\": false, \"normalized\": false, "
                "\"rstrip\": false, \"single_word\": false}",
                first ? "" : ",\n", names[k], vals[k]);
        first = 0;
    }
    fputs("\n}\n", f);
    return close_out(f, path);
}
