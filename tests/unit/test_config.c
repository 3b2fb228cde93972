/* test_config.c - defaults, YAML, environment and flags in precedence; bounds; YAML errors. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "log.h"

static int64_t batch, tokens;
static double frac;
static bool dp;
static char *name, *file;

static mg_cfg_opt opts[] = {
    {"max-batch-size", MG_CFG_INT, &batch, "64", 1, 4096, "sequences per rank", "max_batch_size"},
    {"max-num-tokens", MG_CFG_INT, &tokens, "8192", 1, 1 << 20, "tokens per step", NULL},
    {"free-gpu-memory-fraction", MG_CFG_DOUBLE, &frac, "0.9", 0, 1, "KV share",
     "kv_cache_config.free_gpu_memory_fraction"},
    {"enable-attention-dp", MG_CFG_BOOL, &dp, "false", 1, 0, "DP attention", NULL},
    {"served-model-name", MG_CFG_STR, &name, "gpt-oss", 1, 0, "name", NULL},
    {"extra-engine-args", MG_CFG_YAML, &file, NULL, 1, 0, "engine YAML", NULL},
};
#define NOPTS ((int)(sizeof(opts) / sizeof(opts[0])))

typedef struct {
    int n;
    char keys[16][64], vals[16][64];
} seen;
static mg_status collect(void *ud, const char *k, const char *v, int line) {
    seen *s = ud;
    if (s->n < 16) {
        snprintf(s->keys[s->n], 64, "%s", k);
        snprintf(s->vals[s->n], 64, "%s", v);
        s->n++;
    }
    return MG_OK;
}

int main(void) {
    mg_log_set_level(MG_LOG_WARN);
    char *a0[] = {"prog"};
    CHECK_OK(mg_cfg_parse(opts, NOPTS, 1, a0, "prog", NULL));
    CHECK_EQ_INT(batch, 64);
    CHECK_NEAR(frac, 0.9, 1e-12);
    CHECK(!dp);
    CHECK_EQ_STR(name, "gpt-oss");

    char path[] = "/tmp/mg_test_cfg_XXXXXX";
    int fd = mkstemp(path);
    const char *yaml = "# engine config\n"
                       "max_batch_size: 800   # per rank\n"
                       "max_num_tokens: 768\n"
                       "enable_attention_dp: true\n"
                       "kv_cache_config:\n"
                       "  free_gpu_memory_fraction: 0.8\n"
                       "  dtype: fp8\n"
                       "cuda_graph_config:\n"
                       "  batch_sizes:\n"
                       "    - 1\n"
                       "    - 8\n"
                       "served_model_name: \"gpt oss # quoted\"\n";
    CHECK(write(fd, yaml, strlen(yaml)) == (ssize_t)strlen(yaml));
    close(fd);

    /* YAML fills the table; the environment beats YAML; the flag beats both. */
    setenv("MAGNETO_MAX_NUM_TOKENS", "1024", 1);
    char *a1[] = {"prog", "--extra-engine-args", path, "--max-batch-size=512"};
    CHECK_OK(mg_cfg_parse(opts, NOPTS, 4, a1, "prog", NULL));
    CHECK_EQ_INT(batch, 512);
    CHECK_EQ_INT(tokens, 1024);
    CHECK_NEAR(frac, 0.8, 1e-12);
    CHECK(dp);
    CHECK_EQ_STR(name, "gpt oss # quoted");
    unsetenv("MAGNETO_MAX_NUM_TOKENS");

    seen s = {0};
    CHECK_OK(mg_yaml_load(path, collect, &s));
    CHECK_EQ_INT(s.n, 7);
    CHECK_EQ_STR(s.keys[4], "kv_cache_config.dtype");
    CHECK_EQ_STR(s.keys[5], "cuda_graph_config.batch_sizes");
    CHECK_EQ_STR(s.vals[5], "1,8");

    /* Errors name the source and the setting. */
    char *a2[] = {"prog", "--max-batch-size", "0"};
    CHECK_EQ_INT(mg_cfg_parse(opts, NOPTS, 3, a2, "prog", NULL), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "max-batch-size") && strstr(mg_err_msg(), "outside"));
    char *a3[] = {"prog", "--no-such-flag", "1"};
    CHECK_EQ_INT(mg_cfg_parse(opts, NOPTS, 3, a3, "prog", NULL), MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "--no-such-flag") != NULL);
    char *a4[] = {"prog", "--free-gpu-memory-fraction", "0.5x"};
    CHECK_EQ_INT(mg_cfg_parse(opts, NOPTS, 3, a4, "prog", NULL), MG_EINVAL);

    fd = open(path, O_WRONLY | O_TRUNC);
    const char *bad = "max_batch_size: 800\nmax_num_tokens: lots\n";
    CHECK(write(fd, bad, strlen(bad)) > 0);
    close(fd);
    char *a5[] = {"prog", "--extra-engine-args", path};
    CHECK_EQ_INT(mg_cfg_parse(opts, NOPTS, 3, a5, "prog", NULL), MG_EINVAL);
    CHECK_MSG(strstr(mg_err_msg(), path) && strstr(mg_err_msg(), ":2:"), "%s", mg_err_msg());

    /* A key naming the file row itself is not followed (it would free the path being read);
     * the error on the next line still names the file. */
    fd = open(path, O_WRONLY | O_TRUNC);
    const char *self = "extra_engine_args: /nonexistent.yaml\nmax_num_tokens: lots\n";
    CHECK(write(fd, self, strlen(self)) > 0);
    close(fd);
    CHECK_EQ_INT(mg_cfg_parse(opts, NOPTS, 3, a5, "prog", NULL), MG_EINVAL);
    CHECK_MSG(strstr(mg_err_msg(), path) && strstr(mg_err_msg(), ":2:"), "%s", mg_err_msg());
    CHECK_EQ_STR(file, path);

    /* Flow maps on one line, as Dynamo's TensorRT-LLM recipes for gpt-oss write them. */
    fd = open(path, O_WRONLY | O_TRUNC);
    const char *flow = "enable_attention_dp: true\n"
                       "cuda_graph_config: {max_batch_size: 800, enable_padding: true}\n"
                       "kv_cache_config: {dtype: fp8, free_gpu_memory_fraction: 0.75}\n"
                       "moe_config: {backend: CUTLASS}   # later versions: TRTLLM\n"
                       "spec: {kind: 'Eagle', nested: {a: \"x, y}\", b: [1, [2, 3]]}, e: {}}\n"
                       "served_model_name: \"{not a map}\"\n";
    CHECK(write(fd, flow, strlen(flow)) > 0);
    close(fd);
    seen sf = {0};
    CHECK_OK(mg_yaml_load(path, collect, &sf));
    CHECK_EQ_INT(sf.n, 10);
    CHECK_EQ_STR(sf.keys[1], "cuda_graph_config.max_batch_size");
    CHECK_EQ_STR(sf.vals[1], "800");
    CHECK_EQ_STR(sf.keys[4], "kv_cache_config.free_gpu_memory_fraction");
    CHECK_EQ_STR(sf.keys[5], "moe_config.backend");
    CHECK_EQ_STR(sf.vals[5], "CUTLASS");
    CHECK_EQ_STR(sf.keys[6], "spec.kind");
    CHECK_EQ_STR(sf.vals[6], "Eagle");
    CHECK_EQ_STR(sf.keys[7], "spec.nested.a");
    CHECK_EQ_STR(sf.vals[7], "x, y}");
    CHECK_EQ_STR(sf.keys[8], "spec.nested.b");
    CHECK_EQ_STR(sf.vals[8], "[1, [2, 3]]");
    CHECK_EQ_STR(sf.vals[9], "{not a map}");
    CHECK_OK(mg_cfg_parse(opts, NOPTS, 3, a5, "prog", NULL));
    CHECK_NEAR(frac, 0.75, 1e-12);
    CHECK(dp);
    CHECK_EQ_INT(batch, 64); /* cuda_graph_config.max_batch_size is another key */
    CHECK_EQ_STR(name, "{not a map}");
    CHECK_EQ_INT(mg_yaml_parse("a: {b: 1\n", "inline", collect, &sf), MG_EFORMAT);
    CHECK(strstr(mg_err_msg(), "inline:1") != NULL);
    CHECK_EQ_INT(mg_yaml_parse("a: {b: 1} c\n", "inline", collect, &sf), MG_EFORMAT);
    CHECK_EQ_INT(mg_yaml_parse("a: {b: 1, c d}\n", "inline", collect, &sf), MG_EFORMAT);

    /* Plain nulls (settings dumped by TensorRT-LLM) leave the default; a quoted one is text. */
    seen sn = {0};
    CHECK_OK(mg_yaml_parse("kv_cache_config:\n  max_tokens: null\n  dtype: ~\n"
                           "a: {b: null, c: 'null', d: 1}\nname: \"null\"\n",
                           "inline", collect, &sn));
    CHECK_EQ_INT(sn.n, 3);
    CHECK_EQ_STR(sn.keys[0], "a.c");
    CHECK_EQ_STR(sn.vals[0], "null");
    CHECK_EQ_STR(sn.keys[1], "a.d");
    CHECK_EQ_STR(sn.keys[2], "name");
    CHECK_EQ_STR(sn.vals[2], "null");

    /* A document start marker after a comment header; a second document is still refused. */
    seen sd = {0};
    CHECK_OK(mg_yaml_parse("# SPDX-License-Identifier: Apache-2.0\n\n---\na: 1\n", "inline",
                           collect, &sd));
    CHECK_EQ_INT(sd.n, 1);
    CHECK_EQ_INT(mg_yaml_parse("a: 1\n---\nb: 2\n", "inline", collect, &sd), MG_EFORMAT);
    CHECK(strstr(mg_err_msg(), "inline:2") != NULL);

    /* A block list too long for the reader is an error, not a silently cut value. */
    static char longlist[8192];
    size_t ll = (size_t)snprintf(longlist, sizeof(longlist), "ids:\n");
    for (int i = 0; i < 600; i++)
        ll += (size_t)snprintf(longlist + ll, sizeof(longlist) - ll, "  - %d\n", 200000 + i);
    CHECK_EQ_INT(mg_yaml_parse(longlist, "inline", collect, &sd), MG_EFORMAT);
    CHECK_MSG(strstr(mg_err_msg(), "ids") != NULL, "%s", mg_err_msg());

    /* An apostrophe inside a plain scalar does not open a quote that hides the comment. */
    seen sq = {0};
    CHECK_OK(mg_yaml_parse("note: the model's card   # a comment\nnext: 'it''s'\n", "inline",
                           collect, &sq));
    CHECK_EQ_INT(sq.n, 2);
    CHECK_EQ_STR(sq.vals[0], "the model's card");

    seen s2 = {0};
    CHECK_EQ_INT(mg_yaml_parse("a: 1\nb: &x 2\n", "inline", collect, &s2), MG_EFORMAT);
    CHECK(strstr(mg_err_msg(), "inline:2") != NULL);
    CHECK_EQ_INT(mg_yaml_parse("a: \"open\n", "inline", collect, &s2), MG_EFORMAT);
    CHECK_EQ_INT(mg_yaml_parse("just text\n", "inline", collect, &s2), MG_EFORMAT);
    unlink(path);
    mg_cfg_free(opts, NOPTS);
    /* Quoted scalars: YAML's escapes in double quotes, '' in single quotes; a '#' or ':' inside
     * quotes is text; errors say what is wrong. */
    {
        const char *q = "a: \"tab\\there \\\"q\\\" back\\\\slash \\u00e9\\x41\\U0001F600 # no\"\n"
                        "b: 'it''s # not a comment: either'\n"
                        "\"c: d\": \"x\\\"\"   # the key has a colon\n"
                        "m: {k: \"v\\\", w}\", l: 'x''y'}\n"
                        "list:\n"
                        "  - \"one\\ttwo\"\n"
                        "  - 'th''ree'\n";
        seen e = {0};
        CHECK_OK(mg_yaml_parse(q, "q.yaml", collect, &e));
        CHECK_EQ_INT(e.n, 6);
        CHECK_EQ_STR(e.keys[0], "a");
        CHECK_EQ_STR(e.vals[0], "tab\there \"q\" back\\slash \xc3\xa9"
                                "A\xf0\x9f\x98\x80 # no");
        CHECK_EQ_STR(e.vals[1], "it's # not a comment: either");
        CHECK_EQ_STR(e.keys[2], "c: d");
        CHECK_EQ_STR(e.vals[2], "x\"");
        CHECK_EQ_STR(e.keys[3], "m.k");
        CHECK_EQ_STR(e.vals[3], "v\", w}");
        CHECK_EQ_STR(e.keys[4], "m.l");
        CHECK_EQ_STR(e.vals[4], "x'y");
        CHECK_EQ_STR(e.keys[5], "list");
        CHECK_EQ_STR(e.vals[5], "one\ttwo,th'ree");
        const char *bad[][2] = {
            {"a: \"x\\q\"\n", "unknown escape"},
            {"a: \"x\\\"\n", "unterminated quote"},
            {"a: \"x\" y\n", "text after a closing quote"},
            {"a: \"\\x4\"\n", "bad hex digits"},
            {"a: \"\\x00\"\n", "NUL"},
            {"a: \"\\uD800\"\n", "no Unicode character"},
            {"- \"x\\q\"\n", "list item without a key"},
        };
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
            seen z = {0};
            CHECK_EQ_INT(mg_yaml_parse(bad[k][0], "bad.yaml", collect, &z), MG_EFORMAT);
            CHECK_MSG(strstr(mg_err_msg(), "bad.yaml:1:") && strstr(mg_err_msg(), bad[k][1]),
                      "case %zu: %s", k, mg_err_msg());
        }
    }

    return check_done();
}
