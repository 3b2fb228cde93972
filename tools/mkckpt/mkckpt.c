/* mkckpt.c - write a gpt-oss checkpoint in the exact Hugging Face layout with seeded random
 * weights: config.json, generation_config.json, model-0000i-of-0000n.safetensors shards,
 * model.safetensors.index.json, and tokenizer files when a tokenizer source is given.
 *
 * Tests, CI and the default demo run on these (DESIGN.md §3): the same seed gives the same bytes
 * on every machine, so a checkpoint made in CI is byte-identical to the one the HF reference
 * loaded elsewhere. Hence integer-only random numbers (SplitMix64 streams, one per tensor,
 * seeded from the tensor's name), only correctly rounded float operations (+, *, sqrt) in value
 * generation, float contraction off (see CMakeLists.txt) and fixed JSON text.
 *
 * Value scales keep activations in a realistic range through every layer: projections and
 * experts have standard deviation 1/sqrt(fan_in) so a unit-RMS input gives unit-RMS outputs,
 * norms sit near 1, biases are small, and MXFP4 blocks pick their E8M0 scale so the decoded
 * values have that deviation (random e2m1 codes have RMS 2.93).
 *
 *   mg-mkckpt --preset tiny --out DIR [--seed N] [--hidden N ...] [--tokenizer-from PATH]
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "status.h"

typedef struct shape_cfg {
    int hidden, layers, heads, kv_heads, head_dim, experts, top_k, intermediate, vocab, window;
    int64_t shard_mb;
} shape_cfg;

static const struct {
    const char *name;
    shape_cfg c;
} presets[] = {
    /* tiny: the full vocabulary (so the real tokenizer works) but hidden 64: about 52 MB. Two
     * shards so that the index is exercised. */
    {"tiny", {64, 4, 4, 2, 64, 8, 4, 64, 201088, 128, 32}},
    /* mid: wider and with more heads, for the reference comparison past the 128-token window;
     * a smaller vocabulary keeps CI fast. */
    {"mid", {128, 4, 8, 2, 64, 8, 4, 128, 32768, 128, 64}},
    {"20b", {2880, 24, 64, 8, 64, 32, 4, 2880, 201088, 128, 4096}},
    {"120b", {2880, 36, 64, 8, 64, 128, 4, 2880, 201088, 128, 4096}},
};

/* ---- deterministic random numbers ---- */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t stream_seed(uint64_t seed, const char *name) {
    uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a of the name, mixed with the seed */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001B3ull;
    uint64_t s = seed ^ h;
    return splitmix(&s);
}

/* Uniform on [-sqrt(3), sqrt(3)): unit variance, exact in float (24-bit mantissa). */
static float unit_uniform(uint64_t *s) {
    float u = (float)(splitmix(s) >> 40) * (1.0f / 16777216.0f);
    return (2.0f * u - 1.0f) * 1.7320508f;
}

static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1); /* round to nearest even; values are finite */
    return (uint16_t)(u >> 16);
}

/* ---- the tensor plan ---- */

typedef enum { K_BF16, K_BLOCKS, K_SCALES } kind;

typedef struct tensor {
    char name[96];
    kind k;
    int ndim;
    int64_t shape[4];
    float mean, std; /* bf16: mean + std*uniform; blocks/scales: std of the decoded values */
    uint64_t nbytes;
    int shard;
    uint64_t offset; /* in the shard's data section */
} tensor;

typedef struct plan {
    tensor *t;
    int n, cap;
    int n_shards;
} plan;

static tensor *add(plan *p, kind k, float mean, float std, int ndim, const int64_t *shape,
                   const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static tensor *add(plan *p, kind k, float mean, float std, int ndim, const int64_t *shape,
                   const char *fmt, ...) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 256;
        p->t = realloc(p->t, sizeof(tensor) * p->cap);
        if (!p->t) abort();
    }
    tensor *t = &p->t[p->n++];
    memset(t, 0, sizeof(*t));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof(t->name), fmt, ap);
    va_end(ap);
    t->k = k, t->mean = mean, t->std = std, t->ndim = ndim;
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (uint64_t)(t->shape[i] = shape[i]);
    t->nbytes = k == K_BF16 ? 2 * n : n;
    return t;
}

#define S(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / 8), ((const int64_t[]){__VA_ARGS__})

/* sqrt is correctly rounded in IEEE 754, so this is the same float everywhere. */
static float inv_sqrt(int n) {
    return 1.0f / sqrtf((float)n);
}

static void make_plan(const shape_cfg *c, plan *p) {
    int64_t H = c->hidden, Q = (int64_t)c->heads * c->head_dim,
            KV = (int64_t)c->kv_heads * c->head_dim, E = c->experts, I = c->intermediate;
    add(p, K_BF16, 0, 1.0f, S(c->vocab, H), "model.embed_tokens.weight");
    for (int l = 0; l < c->layers; l++) {
        const char *a = "model.layers.%d.self_attn.", *m = "model.layers.%d.mlp.";
        char f[128];
        add(p, K_BF16, 1.0f, 0.1f, S(H), "model.layers.%d.input_layernorm.weight", l);
#define ADD(k, mean, std, shp, fmt, suffix)                                                        \
    snprintf(f, sizeof(f), "%s%s", fmt, suffix);                                                   \
    add(p, k, mean, std, shp, f, l)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-security"
        ADD(K_BF16, 0, inv_sqrt(H), S(Q, H), a, "q_proj.weight");
        ADD(K_BF16, 0, 0.02f, S(Q), a, "q_proj.bias");
        ADD(K_BF16, 0, inv_sqrt(H), S(KV, H), a, "k_proj.weight");
        ADD(K_BF16, 0, 0.02f, S(KV), a, "k_proj.bias");
        ADD(K_BF16, 0, inv_sqrt(H), S(KV, H), a, "v_proj.weight");
        ADD(K_BF16, 0, 0.02f, S(KV), a, "v_proj.bias");
        ADD(K_BF16, 0, inv_sqrt(Q), S(H, Q), a, "o_proj.weight");
        ADD(K_BF16, 0, 0.02f, S(H), a, "o_proj.bias");
        ADD(K_BF16, 0, 1.0f, S(c->heads), a, "sinks");
        add(p, K_BF16, 1.0f, 0.1f, S(H), "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(K_BF16, 0, inv_sqrt(H), S(E, H), m, "router.weight");
        ADD(K_BF16, 0, 0.1f, S(E), m, "router.bias");
        ADD(K_BLOCKS, 0, inv_sqrt(H), S(E, 2 * I, H / 32, 16), m, "experts.gate_up_proj_blocks");
        ADD(K_SCALES, 0, inv_sqrt(H), S(E, 2 * I, H / 32), m, "experts.gate_up_proj_scales");
        ADD(K_BF16, 0, 0.02f, S(E, 2 * I), m, "experts.gate_up_proj_bias");
        ADD(K_BLOCKS, 0, inv_sqrt(I), S(E, H, I / 32, 16), m, "experts.down_proj_blocks");
        ADD(K_SCALES, 0, inv_sqrt(I), S(E, H, I / 32), m, "experts.down_proj_scales");
        ADD(K_BF16, 0, 0.02f, S(E, H), m, "experts.down_proj_bias");
#pragma GCC diagnostic pop
#undef ADD
    }
    add(p, K_BF16, 1.0f, 0.1f, S(H), "model.norm.weight");
    add(p, K_BF16, 0, inv_sqrt(H), S(c->vocab, H), "lm_head.weight");

    /* Shards in tensor order; a shard closes when the next tensor would overflow it. */
    uint64_t limit = (uint64_t)c->shard_mb << 20, used = 0;
    int shard = 0;
    for (int i = 0; i < p->n; i++) {
        if (used && used + p->t[i].nbytes > limit) shard++, used = 0;
        p->t[i].shard = shard;
        p->t[i].offset = used;
        used += p->t[i].nbytes;
    }
    p->n_shards = shard + 1;
}

/* E8M0 exponent for a block whose decoded values should have deviation std: the largest e with
 * 2^e * 2.93 <= std, found by exact doubling so it is the same on every machine. */
static int base_exponent(float std) {
    double target = (double)std / 2.93, v = 1.0;
    int e = 0;
    while (v > target) v *= 0.5, e--;
    while (v * 2 <= target) v *= 2, e++;
    return e;
}

/* Fill buf with elements [start, start+n) of tensor t, continuing the stream s. */
static void generate(const tensor *t, uint64_t *s, unsigned char *buf, uint64_t n) {
    if (t->k == K_BF16) {
        uint16_t *o = (uint16_t *)buf;
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = f32_to_bf16(t->mean + t->std * unit_uniform(s));
            /* Little-endian bytes on every host. */
            buf[2 * i] = (unsigned char)(h & 0xFF);
            buf[2 * i + 1] = (unsigned char)(h >> 8);
            (void)o;
        }
    } else if (t->k == K_BLOCKS) {
        for (uint64_t i = 0; i < n; i += 8) { /* 8 random bytes per draw */
            uint64_t r = splitmix(s);
            for (uint64_t j = 0; j < 8 && i + j < n; j++)
                buf[i + j] = (unsigned char)(r >> (8 * j));
        }
    } else {
        /* Scales vary by a factor of two either way around the base, as trained blocks do. */
        int e = 127 + base_exponent(t->std);
        for (uint64_t i = 0; i < n; i++) buf[i] = (unsigned char)(e - 1 + (int)(splitmix(s) % 3));
    }
}

static mg_status write_json_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return MG_ERRF(MG_EIO, "%s: cannot create: %s", path, strerror(errno));
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    return ok ? MG_OK : MG_ERRF(MG_EIO, "%s: write failed", path);
}

static void shard_name(char *buf, size_t cap, int i, int n) {
    snprintf(buf, cap, "model-%05d-of-%05d.safetensors", i + 1, n);
}

/* Header JSON of shard k, padded with spaces to a multiple of 8 (data then stays aligned). */
static char *shard_header(const plan *p, int k, uint64_t *len) {
    size_t cap = 4096 + (size_t)p->n * 256, n = 0;
    char *h = malloc(cap);
    if (!h) return NULL;
    static const char *dt[] = {"BF16", "U8", "U8"};
    n += (size_t)snprintf(h + n, cap - n, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < p->n; i++) {
        const tensor *t = &p->t[i];
        if (t->shard != k) continue;
        n += (size_t)snprintf(h + n, cap - n, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name,
                              dt[t->k]);
        for (int d = 0; d < t->ndim; d++)
            n += (size_t)snprintf(h + n, cap - n, "%s%" PRId64, d ? "," : "", t->shape[d]);
        n += (size_t)snprintf(h + n, cap - n, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}",
                              t->offset, t->offset + t->nbytes);
    }
    n += (size_t)snprintf(h + n, cap - n, "}");
    while (n % 8) h[n++] = ' ';
    h[n] = 0;
    *len = n;
    return h;
}

static mg_status write_shard(const plan *p, int k, const char *dir, uint64_t seed) {
    char name[64], path[4096];
    shard_name(name, sizeof(name), k, p->n_shards);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    uint64_t hlen;
    char *hdr = shard_header(p, k, &hlen);
    if (!hdr) return MG_ERRF(MG_ENOMEM, "out of memory");
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(hdr);
        return MG_ERRF(MG_EIO, "%s: cannot create: %s", path, strerror(errno));
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hlen >> (8 * i));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
    free(hdr);
    enum { CHUNK = 1 << 20 }; /* elements per chunk: bf16 needs 2 bytes each */
    unsigned char *buf = malloc(2 * CHUNK);
    if (!buf) ok = false;
    for (int i = 0; ok && i < p->n; i++) {
        const tensor *t = &p->t[i];
        if (t->shard != k) continue;
        uint64_t s = stream_seed(seed, t->name);
        uint64_t elems = t->k == K_BF16 ? t->nbytes / 2 : t->nbytes;
        for (uint64_t done = 0; ok && done < elems; done += CHUNK) {
            uint64_t n = elems - done < CHUNK ? elems - done : CHUNK;
            generate(t, &s, buf, n);
            size_t bytes = (size_t)(t->k == K_BF16 ? 2 * n : n);
            ok = fwrite(buf, 1, bytes, f) == bytes;
        }
    }
    free(buf);
    ok = (fclose(f) == 0) && ok;
    return ok ? MG_OK : MG_ERRF(MG_EIO, "%s: write failed: %s", path, strerror(errno));
}

static mg_status write_index(const plan *p, const char *dir) {
    uint64_t total = 0;
    for (int i = 0; i < p->n; i++) total += p->t[i].nbytes;
    size_t cap = 4096 + (size_t)p->n * 160, n = 0;
    char *j = malloc(cap);
    if (!j) return MG_ERRF(MG_ENOMEM, "out of memory");
    n += (size_t)snprintf(j + n, cap - n,
                          "{\n  \"metadata\": {\n    \"total_size\": %" PRIu64
                          "\n  },\n  \"weight_map\": {\n",
                          total);
    for (int i = 0; i < p->n; i++) {
        char name[64];
        shard_name(name, sizeof(name), p->t[i].shard, p->n_shards);
        n += (size_t)snprintf(j + n, cap - n, "    \"%s\": \"%s\"%s\n", p->t[i].name, name,
                              i + 1 < p->n ? "," : "");
    }
    snprintf(j + n, cap - n, "  }\n}\n");
    char path[4096];
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    mg_status st = write_json_file(path, j);
    free(j);
    return st;
}

/* Special token ids exist only in the full vocabulary; a smaller one (the mid preset) writes
 * null, which transformers accepts, where an id past the vocabulary breaks its embedding. */
static const char *id_or_null(int id, int vocab, char *buf) {
    if (id >= vocab) return "null";
    snprintf(buf, 16, "%d", id);
    return buf;
}

static mg_status write_configs(const shape_cfg *c, const char *dir) {
    char e0[16], e1[16];
    char lt[16384];
    size_t n = 0;
    for (int l = 0; l < c->layers; l++)
        n += (size_t)snprintf(lt + n, sizeof(lt) - n, "%s\n    \"%s\"", l ? "," : "",
                              l % 2 == 0 ? "sliding_attention" : "full_attention");
    char text[32768], path[4096];
    /* The keys and values of the released gpt-oss config.json, shapes from c. */
    snprintf(text, sizeof(text),
             "{\n"
             "  \"architectures\": [\n    \"GptOssForCausalLM\"\n  ],\n"
             "  \"attention_bias\": true,\n"
             "  \"attention_dropout\": 0.0,\n"
             "  \"eos_token_id\": %s,\n"
             "  \"experts_per_token\": %d,\n"
             "  \"head_dim\": %d,\n"
             "  \"hidden_act\": \"silu\",\n"
             "  \"hidden_size\": %d,\n"
             "  \"initial_context_length\": 4096,\n"
             "  \"initializer_range\": 0.02,\n"
             "  \"intermediate_size\": %d,\n"
             "  \"layer_types\": [%s\n  ],\n"
             "  \"max_position_embeddings\": 131072,\n"
             "  \"model_type\": \"gpt_oss\",\n"
             "  \"num_attention_heads\": %d,\n"
             "  \"num_experts_per_tok\": %d,\n"
             "  \"num_hidden_layers\": %d,\n"
             "  \"num_key_value_heads\": %d,\n"
             "  \"num_local_experts\": %d,\n"
             "  \"output_router_logits\": false,\n"
             "  \"pad_token_id\": %s,\n"
             "  \"quantization_config\": {\n"
             "    \"modules_to_not_convert\": [\n"
             "      \"model.layers.*.self_attn\",\n"
             "      \"model.layers.*.mlp.router\",\n"
             "      \"model.embed_tokens\",\n"
             "      \"lm_head\"\n"
             "    ],\n"
             "    \"quant_method\": \"mxfp4\"\n"
             "  },\n"
             "  \"rms_norm_eps\": 1e-05,\n"
             "  \"rope_scaling\": {\n"
             "    \"beta_fast\": 32.0,\n"
             "    \"beta_slow\": 1.0,\n"
             "    \"factor\": 32.0,\n"
             "    \"original_max_position_embeddings\": 4096,\n"
             "    \"rope_type\": \"yarn\",\n"
             "    \"truncate\": false\n"
             "  },\n"
             "  \"rope_theta\": 150000,\n"
             "  \"router_aux_loss_coef\": 0.9,\n"
             "  \"sliding_window\": %d,\n"
             "  \"swiglu_limit\": 7.0,\n"
             "  \"tie_word_embeddings\": false,\n"
             "  \"transformers_version\": \"4.55.0.dev0\",\n"
             "  \"use_cache\": true,\n"
             "  \"vocab_size\": %d\n"
             "}\n",
             id_or_null(200002, c->vocab, e0), c->top_k, c->head_dim, c->hidden, c->intermediate,
             lt, c->heads, c->top_k, c->layers, c->kv_heads, c->experts,
             id_or_null(199999, c->vocab, e1), c->window, c->vocab);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    mg_status st = write_json_file(path, text);
    if (st) return st;
    snprintf(path, sizeof(path), "%s/generation_config.json", dir);
    if (c->vocab <= 200012) /* no special tokens: see id_or_null */
        return write_json_file(path, "{\n"
                                     "  \"do_sample\": true,\n"
                                     "  \"transformers_version\": \"4.55.0.dev0\"\n"
                                     "}\n");
    return write_json_file(path,
                           "{\n"
                           "  \"bos_token_id\": 199998,\n"
                           "  \"do_sample\": true,\n"
                           "  \"eos_token_id\": [\n    200002,\n    199999,\n    200012\n  ],\n"
                           "  \"pad_token_id\": 199999,\n"
                           "  \"transformers_version\": \"4.55.0.dev0\"\n"
                           "}\n");
}

/* Tokenizer files: a folder is copied from (tokenizer.json and friends); a file is taken as the
 * o200k ranks file and handed to the tokenizer tool, `TOOL RANKS OUTDIR`. */
static mg_status write_tokenizer(const char *from, const char *tool, const char *dir) {
    struct stat sb;
    if (stat(from, &sb) != 0)
        return MG_ERRF(MG_ENOTFOUND, "--tokenizer-from %s: %s", from, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        static const char *files[] = {"tokenizer.json", "tokenizer_config.json",
                                      "special_tokens_map.json", "chat_template.jinja"};
        int copied = 0;
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
            char src[4096], dst[4096];
            snprintf(src, sizeof(src), "%s/%s", from, files[i]);
            snprintf(dst, sizeof(dst), "%s/%s", dir, files[i]);
            FILE *in = fopen(src, "rb");
            if (!in) continue;
            FILE *out = fopen(dst, "wb");
            if (!out) {
                fclose(in);
                return MG_ERRF(MG_EIO, "%s: cannot create: %s", dst, strerror(errno));
            }
            char buf[65536];
            size_t n;
            bool ok = true;
            while (ok && (n = fread(buf, 1, sizeof(buf), in)) > 0) ok = fwrite(buf, 1, n, out) == n;
            fclose(in);
            if (fclose(out) != 0 || !ok) return MG_ERRF(MG_EIO, "%s: write failed", dst);
            copied++;
        }
        if (!copied)
            return MG_ERRF(MG_ENOTFOUND, "--tokenizer-from %s: no tokenizer.json there", from);
        return MG_OK;
    }
    /* Default tool: the one built beside this maker (<build>/tools/tok/), else PATH. */
    char near[4096];
    if (!tool) {
        tool = "mk-tokenizer-json";
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        char *slash = n > 0 ? (self[n] = 0, strrchr(self, '/')) : NULL;
        if (slash) {
            *slash = 0;
            snprintf(near, sizeof(near), "%.4000s/../tok/mk-tokenizer-json", self);
            if (access(near, X_OK) == 0) tool = near;
        }
    }
    MG_INFO("tokenizer: %s %s %s", tool, from, dir);
    pid_t pid = fork();
    if (pid < 0) return MG_ERRF(MG_EIO, "fork: %s", strerror(errno));
    if (pid == 0) {
        execlp(tool, tool, from, dir, (char *)NULL);
        fprintf(stderr, "mg-mkckpt: cannot run %s: %s\n", tool, strerror(errno));
        _exit(127);
    }
    int ws;
    if (waitpid(pid, &ws, 0) < 0 || !WIFEXITED(ws))
        return MG_ERRF(MG_EIO, "tokenizer tool %s failed on %s", tool, from);
    if (WEXITSTATUS(ws) == 127) { /* not found: the model loads without tokenizer files */
        MG_WARN("tokenizer tool %s not found: tokenizer files not written", tool);
        return MG_OK;
    }
    if (WEXITSTATUS(ws) != 0)
        return MG_ERRF(MG_EIO, "tokenizer tool %s failed on %s (exit %d)", tool, from,
                       WEXITSTATUS(ws));
    return MG_OK;
}

/* mkdir -p */
static bool make_dirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return false;
        *p = '/';
    }
    return mkdir(buf, 0755) == 0 || errno == EEXIST;
}

int main(int argc, char **argv) {
    mg_log_init("mkckpt", -1);
    char *preset = NULL, *out = NULL, *tok_from = NULL, *tok_tool = NULL;
    int64_t seed = 0, v[11] = {0};
    mg_cfg_opt opts[] = {
        {"preset", MG_CFG_STR, &preset, "tiny", 0, -1, "tiny | mid | 20b | 120b", NULL},
        {"out", MG_CFG_STR, &out, NULL, 0, -1, "output folder (created)", NULL},
        {"seed", MG_CFG_INT, &seed, "1", 0, 9e18, "random seed: same seed, same bytes", NULL},
        {"hidden", MG_CFG_INT, &v[0], "0", 0, 65536, "hidden_size (multiple of 32; 0: preset)",
         NULL},
        {"layers", MG_CFG_INT, &v[1], "0", 0, 256, "num_hidden_layers", NULL},
        {"heads", MG_CFG_INT, &v[2], "0", 0, 1024, "num_attention_heads", NULL},
        {"kv-heads", MG_CFG_INT, &v[3], "0", 0, 1024, "num_key_value_heads", NULL},
        {"head-dim", MG_CFG_INT, &v[4], "0", 0, 1024, "head_dim", NULL},
        {"experts", MG_CFG_INT, &v[5], "0", 0, 4096, "num_local_experts", NULL},
        {"top-k", MG_CFG_INT, &v[6], "0", 0, 64, "num_experts_per_tok", NULL},
        {"intermediate", MG_CFG_INT, &v[7], "0", 0, 1 << 24, "intermediate_size (multiple of 32)",
         NULL},
        {"vocab", MG_CFG_INT, &v[8], "0", 0, 1 << 24, "vocab_size", NULL},
        {"sliding-window", MG_CFG_INT, &v[9], "0", 0, 1 << 24, "sliding_window", NULL},
        {"shard-mb", MG_CFG_INT, &v[10], "0", 0, 1 << 20, "largest shard in MiB", NULL},
        {"tokenizer-from", MG_CFG_STR, &tok_from, NULL, 0, -1,
         "tokenizer folder to copy, or o200k ranks file for --tokenizer-tool", NULL},
        {"tokenizer-tool", MG_CFG_STR, &tok_tool, NULL, 0, -1,
         "program run as TOOL RANKS OUTDIR (default: mk-tokenizer-json of this build, else PATH)",
         NULL},
    };
    int nopts = (int)(sizeof(opts) / sizeof(opts[0]));
    mg_status st =
        mg_cfg_parse(opts, nopts, argc, argv, "mg-mkckpt",
                     "Write a gpt-oss checkpoint (HF layout) with seeded random weights.");
    if (st == MG_ECANCELED) return 0;
    int rc = 1;
    if (st) {
        MG_LOG_ERR("mg-mkckpt");
        goto done;
    }
    shape_cfg c;
    bool found = false;
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++)
        if (strcmp(preset, presets[i].name) == 0) c = presets[i].c, found = true;
    if (!found) {
        MG_ERROR("--preset %s: unknown (tiny, mid, 20b, 120b)", preset);
        goto done;
    }
    if (!out) {
        MG_ERROR("--out is required");
        goto done;
    }
    int *f[] = {&c.hidden,  &c.layers, &c.heads,        &c.kv_heads, &c.head_dim,
                &c.experts, &c.top_k,  &c.intermediate, &c.vocab,    &c.window};
    for (int i = 0; i < 10; i++)
        if (v[i]) *f[i] = (int)v[i];
    if (v[10]) c.shard_mb = v[10];
    if (c.hidden % 32 || c.intermediate % 32 || c.heads % c.kv_heads || c.head_dim % 2 ||
        c.top_k > c.experts) {
        MG_ERROR("inconsistent shape: hidden and intermediate must be multiples of 32, heads a "
                 "multiple of kv-heads, head-dim even, top-k <= experts");
        goto done;
    }
    if (!make_dirs(out)) {
        MG_ERROR("%s: cannot create: %s", out, strerror(errno));
        goto done;
    }
    plan p = {0};
    make_plan(&c, &p);
    st = write_configs(&c, out);
    for (int k = 0; !st && k < p.n_shards; k++) st = write_shard(&p, k, out, (uint64_t)seed);
    if (!st) st = write_index(&p, out);
    if (!st && tok_from) st = write_tokenizer(tok_from, tok_tool, out);
    if (!st && !tok_from)
        MG_WARN("no --tokenizer-from: tokenizer files not written (model loading does not need "
                "them)");
    free(p.t);
    if (st) {
        MG_LOG_ERR("mg-mkckpt");
        goto done;
    }
    MG_INFO("wrote %s: preset %s, seed %lld, %d tensors in %d shards", out, preset, (long long)seed,
            p.n, p.n_shards);
    rc = 0;
done:
    mg_cfg_free(opts, nopts);
    return rc;
}
