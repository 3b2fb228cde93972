/* test_model.c - checkpoint loading: the JSON reader, config.json, safetensors validation, and
 * malformed checkpoints, each of which must give one clear error naming the file and the tensor
 * (never a crash: this test also runs under ASan+UBSan).
 *
 * A small checkpoint (vocabulary 4096, 2 layers, two shards) is made with mg-mkckpt (MG_MKCKPT)
 * into MG_CKPT_DIR; each case copies it, damages one thing and loads it. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "mjson.h"
#include "model.h"
#include "sha256.h"

static const char *base_dir, *maker_path;
static char case_dir[8192];

/* The maker reads MAGNETO_<OPTION> from the environment too; a deployment's MAGNETO_SEED (say)
 * must not change the checkpoint this test expects. */
static void clear_maker_env(void) {
    static const char *names[] = {"PRESET",         "OUT",      "SEED",           "HIDDEN",
                                  "LAYERS",         "HEADS",    "KV_HEADS",       "HEAD_DIM",
                                  "EXPERTS",        "TOP_K",    "INTERMEDIATE",   "VOCAB",
                                  "SLIDING_WINDOW", "SHARD_MB", "TOKENIZER_FROM", "TOKENIZER_TOOL"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char n[64];
        snprintf(n, sizeof(n), "MAGNETO_%s", names[i]);
        unsetenv(n);
    }
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    b[*len] = 0;
    fclose(f);
    return b;
}

static void spit(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
}

/* Copy the base checkpoint into a fresh case folder. */
static void fresh_case(const char *name) {
    snprintf(case_dir, sizeof(case_dir), "%s-%s", base_dir, name);
    sh("rm -rf '%s' && cp -r '%s' '%s'", case_dir, base_dir, case_dir);
}

static void case_path(char *out, const char *file) {
    snprintf(out, 8192, "%.4000s/%.200s", case_dir, file);
}

/* Replace the first `from` by `to` in the JSON header of shard `file`; data stays as it was
 * (its offsets are relative to the end of the header, so the header may change length). */
static bool edit_header(const char *file, const char *from, const char *to) {
    char path[8192];
    case_path(path, file);
    size_t len;
    char *b = slurp(path, &len);
    if (!b) return false;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | (unsigned char)b[i];
    char *hdr = strndup(b + 8, n);
    char *at = strstr(hdr, from);
    if (!at) {
        free(hdr);
        free(b);
        return false;
    }
    size_t fl = strlen(from), tl = strlen(to), nl = n - fl + tl;
    char *out = malloc(8 + nl + 8 + len);
    memcpy(out + 8, hdr, at - hdr);
    memcpy(out + 8 + (at - hdr), to, tl);
    memcpy(out + 8 + (at - hdr) + tl, at + fl, n - (at - hdr) - fl);
    while (nl % 8) out[8 + nl++] = ' ';
    for (int i = 0; i < 8; i++) out[i] = (char)(nl >> (8 * i));
    memcpy(out + 8 + nl, b + 8 + n, len - 8 - n);
    spit(path, out, 8 + nl + len - 8 - n);
    free(out);
    free(hdr);
    free(b);
    return true;
}

static bool edit_text(const char *file, const char *from, const char *to) {
    char path[8192];
    case_path(path, file);
    size_t len;
    char *b = slurp(path, &len);
    if (!b) return false;
    char *at = strstr(b, from);
    if (at) {
        FILE *f = fopen(path, "wb");
        fwrite(b, 1, at - b, f);
        fputs(to, f);
        fputs(at + strlen(from), f);
        fclose(f);
    }
    free(b);
    return at != NULL;
}

/* Load the case folder: it must fail with `want`, and the message must hold every needle. */
static void expect_error(const char *what, mg_status want, const char *n1, const char *n2) {
    mg_model *m = NULL;
    mg_status st = model_load(case_dir, &m);
    const char *msg = mg_err_msg();
    CHECK_MSG(st == want, "%s: status %d (%s), want %d", what, st, msg, want);
    CHECK(m == NULL);
    CHECK_MSG(!n1 || strstr(msg, n1), "%s: message \"%s\" lacks \"%s\"", what, msg, n1);
    CHECK_MSG(!n2 || strstr(msg, n2), "%s: message \"%s\" lacks \"%s\"", what, msg, n2);
    printf("%-28s -> %s\n", what, msg);
    model_destroy(m);
}

static const char *S1 = "model-00001-of-00002.safetensors",
                  *S2 = "model-00002-of-00002.safetensors";

static void test_json(void) {
    mjson_doc *d;
    const char *t = "{\"a\": [1, -2.5e1, true, null, \"x\\u00e9\\ud83d\\ude00\\n\"], \"b\": {}}";
    CHECK_OK(mjson_parse(t, strlen(t), "t", &d));
    const mjson *a = mjson_get(mjson_root(d), "a");
    CHECK(a && a->type == MJSON_ARR && a->len == 5);
    int64_t i;
    double x;
    CHECK(mjson_int(a->kid, &i) && i == 1);
    CHECK(mjson_double(a->kid->next, &x) && x == -25.0);
    CHECK(!mjson_int(a->kid->next, &i) || i == -25);
    CHECK_EQ_STR(a->kid->next->next->next->next->str, "x\xc3\xa9\xf0\x9f\x98\x80\n");
    CHECK(mjson_get(mjson_get(mjson_root(d), "b"), "z") == NULL);
    mjson_free(d);
    const char *bad[] = {
        "{",     "[1,]",      "{\"a\" 1}", "\"\\ud800\"",  "\"\\x\"",          "01x",
        "[1] 2", "\"a\x01\"", "\"\xff\"",  "\"\xc0\x80\"", "\"\xed\xa0\x80\"", "tru",
        "",      "-",         "1e",        "{\"a\":[1,2}"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        mg_status st = mjson_parse(bad[k], strlen(bad[k]), "bad.json", &d);
        CHECK_MSG(st == MG_EFORMAT, "\"%s\" parsed", bad[k]);
        CHECK(strstr(mg_err_msg(), "bad.json") != NULL);
    }
    char deep[200];
    memset(deep, '[', sizeof(deep));
    CHECK_EQ_INT(mjson_parse(deep, sizeof(deep), "deep", &d), MG_EFORMAT);
    CHECK(strstr(mg_err_msg(), "nested too deeply") != NULL);
}

static void test_sha256(void) {
    sha256_ctx c;
    unsigned char d[32];
    sha256_init(&c);
    sha256_update(&c, "abc", 3);
    sha256_final(&c, d);
    CHECK(d[0] == 0xba && d[1] == 0x78 && d[31] == 0xad);
    /* 56 bytes: the padding spills into a second block. */
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_init(&c);
    for (size_t k = 0; k < strlen(m); k++) sha256_update(&c, m + k, 1);
    sha256_final(&c, d);
    CHECK(d[0] == 0x24 && d[1] == 0x8d && d[31] == 0xc1);
}

static void test_config(void) {
    mg_model_config c;
    char path[8192];
    snprintf(path, sizeof(path), "%s/config.json", base_dir);
    CHECK_OK(model_config_load(path, &c));
    CHECK_EQ_INT(c.hidden, 64);
    CHECK_EQ_INT(c.n_layers, 2);
    CHECK_EQ_INT(c.vocab, 4096);
    CHECK(c.sliding[0] && !c.sliding[1]);
    CHECK_NEAR(c.rope_factor, 32, 0);
    CHECK_EQ_INT(c.rope_orig_ctx, 4096);
    CHECK(!c.rope_truncate);
    CHECK_NEAR(c.rms_eps, 1e-5, 1e-12);
    CHECK_NEAR(c.swiglu_limit, 7, 0);
    const char *bad[][2] = {
        {"{\"model_type\": \"llama\"}", "model_type"},
        {"{\"model_type\": \"gpt_oss\"}", "hidden_size"},
    };
    for (size_t k = 0; k < 2; k++) {
        CHECK(model_config_parse(bad[k][0], strlen(bad[k][0]), "cfg.json", &c) != MG_OK);
        CHECK(strstr(mg_err_msg(), bad[k][1]) && strstr(mg_err_msg(), "cfg.json"));
    }
    /* YaRN parameters it would take the logarithm of: zero betas, a theta of 1 */
    char *text;
    size_t len;
    CHECK_OK(model_read_file(path, &text, &len));
    const char *keys[] = {"\"beta_fast\"", "\"beta_slow\"", "\"rope_theta\""};
    const char *vals[] = {"0", "0", "1"};
    for (size_t k = 0; text && k < 3; k++) {
        const char *at = strstr(text, keys[k]);
        CHECK(at != NULL);
        if (!at) continue;
        const char *v = strchr(at, ':') + 1, *e = v + strspn(v, " 0123456789.eE+-");
        char *mod = malloc(len + 8);
        size_t n = (size_t)(v - text);
        memcpy(mod, text, n);
        n += (size_t)sprintf(mod + n, " %s", vals[k]);
        strcpy(mod + n, e);
        CHECK_MSG(model_config_parse(mod, strlen(mod), "cfg.json", &c) == MG_EFORMAT, "%s %s",
                  keys[k], vals[k]);
        CHECK(strstr(mg_err_msg(), "rope") != NULL);
        free(mod);
    }
    free(text);
}

/* Same seed, same bytes; another seed, other weights but the same layout. */
static void test_determinism(const char *maker) {
    char again[8192], other[8192], a[65], b[65], c[65];
    snprintf(again, sizeof(again), "%.4000s-again", base_dir);
    snprintf(other, sizeof(other), "%.4000s-seed2", base_dir);
    CHECK_EQ_INT(
        sh("'%s' --preset tiny --vocab 4096 --layers 2 --shard-mb 1 --out '%s' 2>/dev/null", maker,
           again),
        0);
    CHECK_EQ_INT(sh("'%s' --preset tiny --vocab 4096 --layers 2 --shard-mb 1 --seed 2 --out '%s' "
                    "2>/dev/null",
                    maker, other),
                 0);
    const char *files[] = {"config.json", "model.safetensors.index.json", S1, S2};
    for (int i = 0; i < 4; i++) {
        char p1[8192], p2[8192], p3[8192];
        snprintf(p1, sizeof(p1), "%.4000s/%s", base_dir, files[i]);
        snprintf(p2, sizeof(p2), "%.4000s/%s", again, files[i]);
        snprintf(p3, sizeof(p3), "%.4000s/%s", other, files[i]);
        CHECK_OK(sha256_file(p1, a));
        CHECK_OK(sha256_file(p2, b));
        CHECK_OK(sha256_file(p3, c));
        CHECK_MSG(strcmp(a, b) == 0, "%s differs between two runs with the same seed", files[i]);
        if (i < 2)
            CHECK_MSG(strcmp(a, c) == 0, "%s depends on the seed", files[i]);
        else
            CHECK_MSG(strcmp(a, c) != 0, "%s does not depend on the seed", files[i]);
    }
}

static void test_malformed(void) {
    char path[8192];
    mg_model *m = NULL;
    CHECK_OK(model_load(base_dir, &m));
    CHECK(m && m->n_shards == 2 && m->layers[1].down_scales && m->lm_head);
    model_destroy(m);

    /* A single-file checkpoint: model.safetensors and no index. */
    fresh_case("single");
    char p2[8192];
    CHECK_EQ_INT(
        sh("rm -rf '%s' && '%s' --preset tiny --vocab 4096 --layers 2 --out '%s' 2>/dev/null",
           case_dir, maker_path, case_dir),
        0);
    case_path(path, "model.safetensors.index.json");
    unlink(path);
    case_path(path, "model-00001-of-00001.safetensors");
    case_path(p2, "model.safetensors");
    CHECK(rename(path, p2) == 0);
    CHECK_OK(model_load(case_dir, &m));
    CHECK(m && m->n_shards == 1 && m->lm_head && m->embed);
    model_destroy(m);

    fresh_case("truncated");
    case_path(path, S2);
    struct stat sb;
    stat(path, &sb);
    CHECK(truncate(path, sb.st_size - 1000) == 0);
    expect_error("truncated shard", MG_EFORMAT, S2, "lm_head.weight");

    fresh_case("hdrlen");
    case_path(path, S1);
    int fd = open(path, O_WRONLY);
    unsigned char big[8] = {0, 0, 0, 0, 0, 1, 0, 0};
    CHECK(pwrite(fd, big, 8, 0) == 8);
    close(fd);
    expect_error("header length past the end", MG_EFORMAT, S1, "header length");

    fresh_case("short");
    case_path(path, S1);
    CHECK(truncate(path, 5) == 0);
    expect_error("file shorter than 8 bytes", MG_EFORMAT, S1, "too short");

    fresh_case("dtype");
    CHECK(edit_header(S2, "\"lm_head.weight\":{\"dtype\":\"BF16\"",
                      "\"lm_head.weight\":{\"dtype\":\"F16\""));
    expect_error("wrong dtype", MG_EFORMAT, S2, "lm_head.weight has dtype F16, expected BF16");

    fresh_case("dtype-unknown");
    CHECK(edit_header(S2, "\"lm_head.weight\":{\"dtype\":\"BF16\"",
                      "\"lm_head.weight\":{\"dtype\":\"Q4\""));
    expect_error("unknown dtype", MG_EFORMAT, S2, "lm_head.weight: unknown dtype");

    fresh_case("shape");
    CHECK(edit_header(S2, "\"shape\":[4096,64]", "\"shape\":[64,4096]"));
    expect_error("wrong shape", MG_EFORMAT, S2, "lm_head.weight has shape [64, 4096]");

    fresh_case("shape-bytes");
    CHECK(edit_header(S2, "\"shape\":[4096,64]", "\"shape\":[4096,65]"));
    expect_error("shape against offsets", MG_EFORMAT, S2, "lm_head.weight: BF16 [4096, 65] needs");

    fresh_case("missing");
    CHECK(edit_header(S1, "\"model.layers.1.self_attn.sinks\"",
                      "\"model.layers.1.self_attn.sinkz\""));
    expect_error("missing tensor", MG_ENOTFOUND, S1, "model.layers.1.self_attn.sinks");

    fresh_case("index-missing");
    CHECK(edit_text("model.safetensors.index.json", "\"lm_head.weight\"", "\"lm_head.weigh\""));
    expect_error("missing from the index", MG_ENOTFOUND, "model.safetensors.index.json",
                 "lm_head.weight");

    fresh_case("index-path");
    CHECK(edit_text("model.safetensors.index.json", "\"lm_head.weight\": \"",
                    "\"lm_head.weight\": \"../"));
    expect_error("shard outside the folder", MG_EFORMAT, "index.json", "lm_head.weight");

    fresh_case("shard-gone");
    case_path(path, S2);
    unlink(path);
    expect_error("shard file missing", MG_ENOTFOUND, S2, NULL);

    fresh_case("config");
    CHECK(edit_text("config.json", "\"hidden_size\": 64", "\"hidden_size\": 96"));
    expect_error("config disagrees", MG_EFORMAT, "model.embed_tokens.weight",
                 "config.json implies [4096, 96]");

    fresh_case("config-experts");
    CHECK(edit_text("config.json", "\"num_local_experts\": 8", "\"num_local_experts\": 4"));
    expect_error("config experts", MG_EFORMAT, S1, "model.layers.0.mlp.router.weight");

    fresh_case("utf8");
    CHECK(edit_header(S1, "\"model.layers.0.self_attn.sinks\"",
                      "\"model.layers.0.self_attn.\xff\xfenks\""));
    expect_error("non-UTF-8 name", MG_EFORMAT, S1, "model.layers.0.self_attn.\\xff\\xfenks");

    fresh_case("offsets");
    CHECK(edit_header(S2, "\"data_offsets\":[0,", "\"data_offsets\":[128,"));
    expect_error("bad offsets", MG_EFORMAT, S2, "lm_head.weight");

    /* Two tensors claiming the same bytes: give the second tensor of shard 1 the first's. */
    fresh_case("overlap");
    CHECK(edit_header(S1,
                      "\"model.layers.0.input_layernorm.weight\":{\"dtype\":\"BF16\",\"shape\":[64]"
                      ",\"data_offsets\":[524288,524416]",
                      "\"model.layers.0.input_layernorm.weight\":{\"dtype\":\"BF16\",\"shape\":[64]"
                      ",\"data_offsets\":[0,128]"));
    expect_error("overlapping tensors", MG_EFORMAT, S1, "overlap");

    fresh_case("not-json");
    CHECK(edit_header(S1, "{\"__metadata__\"", "[\"__metadata__\""));
    expect_error("header not JSON", MG_EFORMAT, S1, NULL);

    fresh_case("config-json");
    CHECK(edit_text("config.json", "{", "{{"));
    expect_error("config not JSON", MG_EFORMAT, "config.json", NULL);

    /* Random damage: truncations at every region and flipped header bytes must never crash. */
    fresh_case("fuzz");
    case_path(path, S1);
    size_t len;
    char *orig = slurp(path, &len);
    CHECK(orig != NULL);
    if (!orig) return;
    uint64_t seed = 42;
    int failures = 0;
    for (int k = 0; k < 300; k++) {
        char *b = malloc(len);
        memcpy(b, orig, len);
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t n = len;
        if (k % 3 == 0)
            n = (seed >> 33) % (k < 150 ? 12000 : len);
        else
            for (int j = 0; j < 1 + k % 4; j++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                b[(seed >> 33) % 9000] ^= (char)(1 + (seed >> 20) % 255);
            }
        spit(path, b, n);
        free(b);
        if (model_load(case_dir, &m) != MG_OK) failures++;
        model_destroy(m);
    }
    free(orig);
    CHECK(failures > 100); /* most damage is caught; none crashed */
}

int main(void) {
    const char *maker = getenv("MG_MKCKPT"), *dir = getenv("MG_CKPT_DIR");
    if (!maker || !dir) {
        fprintf(stderr, "set MG_MKCKPT and MG_CKPT_DIR\n");
        return 2;
    }
    clear_maker_env();
    base_dir = dir;
    maker_path = maker;
    test_json();
    test_sha256();
    CHECK_EQ_INT(
        sh("rm -rf '%s' && '%s' --preset tiny --vocab 4096 --layers 2 --shard-mb 1 --out '%s' "
           "2>/dev/null",
           dir, maker, dir),
        0);
    test_config();
    test_determinism(maker);
    test_malformed();
    return check_done();
}
