/* test_bench_prompts.c - magneto-bench's inputs: AIPerf option names and aliases, --extra-inputs
 * coercion and merge order, request bodies, synthetic prompts of exactly the requested token
 * count (words and o200k), seeded reproducibility, mooncake traces with shared hash blocks. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "btok.h"
#include "check.h"
#include "options.h"
#include "prompts.h"

static mg_status parse(bench_config *c, const char *line) {
    char *dup = strdup(line), *argv[64];
    int argc = 0;
    argv[argc++] = "magneto-bench";
    for (char *save, *p = strtok_r(dup, " ", &save); p && argc < 63; p = strtok_r(NULL, " ", &save))
        argv[argc++] = p;
    mg_status s = bench_options_parse(argc, argv, c);
    free(dup);
    return s;
}

static void test_options(void) {
    bench_config c;
    CHECK_OK(parse(&c, "profile -m openai/gpt-oss-120b --url http://127.0.0.1:9000 --streaming "
                       "--isl 128 --isl-stddev 3 --osl 1000 --concurrency 64 --num-requests 640 "
                       "--num-warmup-requests 128 --request-rate 320 --request-rate-mode constant "
                       "--random-seed 100 --conversation-num 12800 -H Accept:text/event-stream "
                       "--extra-inputs ignore_eos:true --extra-inputs min_tokens:1000 "
                       "--extra-inputs {\"nvext\":{\"ignore_eos\":true}} --workers-max 252 "
                       "--record-processors 32 --ui simple --endpoint-type chat"));
    CHECK_EQ_STR(c.model, "openai/gpt-oss-120b");
    CHECK_EQ_STR(c.host, "127.0.0.1");
    CHECK_EQ_INT(c.port, 9000);
    CHECK(c.streaming);
    CHECK_NEAR(c.isl_mean, 128, 0);
    CHECK_NEAR(c.isl_stddev, 3, 0);
    CHECK_NEAR(c.osl_mean, 1000, 0);
    CHECK_EQ_INT(c.concurrency, 64);
    CHECK_EQ_INT(c.request_count, 640);
    CHECK_EQ_INT(c.warmup_request_count, 128);
    CHECK_NEAR(c.request_rate, 320, 0);
    CHECK_EQ_INT(c.rate_mode, BENCH_CONSTANT);
    CHECK_EQ_INT(c.random_seed, 100);
    CHECK_EQ_INT(c.conversation_num, 12800);
    CHECK_EQ_INT(c.n_headers, 1);
    CHECK_EQ_STR(c.headers[0], "Accept: text/event-stream");
    CHECK_EQ_STR(c.endpoint_path, "/v1/chat/completions");
    CHECK(json_is_true(json_object_get(c.extra_inputs, "ignore_eos")));
    CHECK_EQ_INT(json_integer_value(json_object_get(c.extra_inputs, "min_tokens")), 1000);
    CHECK(json_is_true(json_object_get(json_object_get(c.extra_inputs, "nvext"), "ignore_eos")));
    CHECK_EQ_STR(c.artifact_dir, "artifacts/openai_gpt-oss-120b-openai-chat-concurrency64-"
                                 "request_rate320");
    /* the body: AIPerf's layout, extra inputs merged last */
    char *b = bench_body_make(&c, "hello", 1000, NULL);
    json_t *j = json_loads(b, 0, NULL);
    CHECK(j != NULL);
    CHECK_EQ_STR(json_string_value(
                     json_object_get(json_array_get(json_object_get(j, "messages"), 0), "content")),
                 "hello");
    CHECK_EQ_STR(json_string_value(
                     json_object_get(json_array_get(json_object_get(j, "messages"), 0), "name")),
                 "text");
    CHECK_EQ_STR(json_string_value(json_object_get(j, "model")), "openai/gpt-oss-120b");
    CHECK(json_is_true(json_object_get(j, "stream")));
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "max_completion_tokens")), 1000);
    CHECK(json_object_get(j, "max_tokens") == NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "min_tokens")), 1000);
    json_decref(j);
    free(b);
    /* extra inputs override what the generator set */
    CHECK_OK(bench_extra_inputs_add(c.extra_inputs, "{\"max_completion_tokens\":5}"));
    CHECK_OK(bench_extra_inputs_add(c.extra_inputs, "temperature:0.0"));
    CHECK_OK(bench_extra_inputs_add(c.extra_inputs, "stop:null"));
    CHECK_OK(bench_extra_inputs_add(c.extra_inputs, "tag:abc"));
    b = bench_body_make(&c, "x", 1000, NULL);
    j = json_loads(b, 0, NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "max_completion_tokens")), 5);
    CHECK(json_is_real(json_object_get(j, "temperature")));
    CHECK(json_is_null(json_object_get(j, "stop")));
    CHECK_EQ_STR(json_string_value(json_object_get(j, "tag")), "abc");
    json_decref(j);
    free(b);
    /* input_config has AIPerf's sections */
    json_t *ic = bench_config_json(&c);
    CHECK(json_object_get(ic, "endpoint") && json_object_get(ic, "input") &&
          json_object_get(ic, "loadgen") && json_object_get(ic, "output"));
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(ic, "loadgen"), "concurrency")),
                 64);
    json_decref(ic);
    bench_config_deinit(&c);
    /* credentials are not written into input_config */
    CHECK_OK(parse(&c, "-m m --api-key sekrit -H Authorization:Bearer_tok"));
    ic = bench_config_json(&c);
    char *dump = json_dumps(ic, 0);
    CHECK(dump && !strstr(dump, "sekrit") && !strstr(dump, "Bearer_tok"));
    free(dump);
    json_decref(ic);
    bench_config_deinit(&c);

    /* completions + legacy defaults */
    CHECK_OK(parse(&c, "--model m --endpoint-type completions --osl 7 --use-legacy-max-tokens"));
    CHECK_EQ_STR(c.endpoint_path, "/v1/completions");
    CHECK_EQ_STR(c.host, "localhost");
    CHECK_EQ_INT(c.port, 8000);
    CHECK_EQ_INT(c.request_count, 10);
    CHECK_EQ_INT(c.concurrency, 1);
    CHECK_EQ_STR(c.artifact_dir, "artifacts/m-openai-completions-concurrency1");
    b = bench_body_make(&c, "p", 7, NULL);
    j = json_loads(b, 0, NULL);
    CHECK(json_is_array(json_object_get(j, "prompt")));
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "max_tokens")), 7);
    CHECK(json_is_false(json_object_get(j, "stream")));
    json_decref(j);
    free(b);
    bench_config_deinit(&c);

    /* errors name the option */
    const char *bad[] = {"--concurrency 4",
                         "-m m --concurrency -1",
                         "-m m --bogus 1",
                         "-m m --request-count 5 --benchmark-duration 10",
                         "-m m --extra-inputs novalue",
                         "-m m --extra-inputs {\"a\":",
                         "-m m --request-rate-mode gamma",
                         "-m m --url https://x:1",
                         "-m m --url host:99999",
                         "-m m --request-cancellation-rate 150",
                         "-m m --fixed-schedule",
                         "-m m --custom-dataset-type multi_turn --input-file x",
                         "-m m --goodput ttft:100",
                         "-m m --request-timeout-seconds 1e300",
                         "-m m --benchmark-duration 1e12"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mg_status s = parse(&c, bad[i]);
        CHECK_MSG(s == MG_EINVAL || s == MG_EUNSUPPORTED, "accepted: %s", bad[i]);
        CHECK(mg_err_msg()[0] != 0);
        bench_config_deinit(&c);
    }
    CHECK_OK(parse(&c, "--model=m --concurrency=3 --streaming=false --benchmark-duration=2"));
    CHECK_EQ_INT(c.concurrency, 3);
    CHECK(!c.streaming);
    CHECK_EQ_INT(c.request_count, 0);
    CHECK_NEAR(c.benchmark_duration_s, 2, 0);
    bench_config_deinit(&c);
}

static void check_exact(const btok *t, const char *what) {
    bench_corpus corpus;
    CHECK_OK(bench_corpus_load(&corpus, NULL, t));
    CHECK(corpus.ntok > 10000);
    int exact = 0, total = 0;
    bench_rng r;
    bench_rng_seed(&r, 7);
    for (int i = 0; i < 300; i++) {
        size_t n = 1 + bench_rng_next(&r) % 2000;
        size_t off = bench_rng_next(&r);  /* any offset: wraps around the corpus */
        if (i < 5) off = corpus.ntok - 3; /* the wrap itself */
        char *p = NULL;
        int got = -1;
        CHECK_OK(bench_corpus_prompt(&corpus, t, off, n, &p, &got));
        CHECK_EQ_INT(btok_count(t, p, strlen(p)), got);
        exact += got == (int)n;
        total++;
        free(p);
    }
    CHECK_MSG(exact == total, "%s: %d of %d prompts exact", what, exact, total);
    bench_corpus_deinit(&corpus);
}

static void test_prompts(void) {
    btok *t;
    CHECK_OK(btok_open("words", &t));
    CHECK_EQ_INT(btok_count(t, " a bb  ccc\n", 11), 4);
    check_exact(t, "words");
    /* the pool: seeded, sizes from N(mean, stddev), bodies parse */
    bench_config c;
    CHECK_OK(parse(&c, "-m m --isl 100 --isl-stddev 10 --osl 50 --osl-stddev 5 --random-seed 3 "
                       "--conversation-num 40 --tokenizer words"));
    bench_corpus corpus;
    CHECK_OK(bench_corpus_load(&corpus, NULL, t));
    bench_pool a, b;
    CHECK_OK(bench_pool_build(&a, &c, &corpus, t));
    CHECK_OK(bench_pool_build(&b, &c, &corpus, t));
    CHECK_EQ_INT(a.n, 40);
    double sum = 0;
    int differ = 0;
    for (size_t i = 0; i < a.n; i++) {
        CHECK_EQ_STR(a.conv[i].body, b.conv[i].body); /* same seed, same bodies */
        CHECK_EQ_STR(a.conv[i].session_id, b.conv[i].session_id);
        CHECK_EQ_INT(btok_count(t, a.conv[i].prompt, strlen(a.conv[i].prompt)), a.conv[i].isl);
        sum += a.conv[i].isl;
        differ += a.conv[i].isl != 100;
        CHECK(a.conv[i].osl >= 30 && a.conv[i].osl <= 70);
        json_t *j = json_loads(a.conv[i].body, 0, NULL);
        CHECK(j != NULL);
        CHECK_EQ_INT(json_integer_value(json_object_get(j, "max_completion_tokens")),
                     a.conv[i].osl);
        json_decref(j);
    }
    CHECK(differ > 20); /* stddev 10 spreads them */
    CHECK(sum / a.n > 94 && sum / a.n < 106);
    bench_pool_deinit(&b);
    bench_config_deinit(&c);
    CHECK_OK(parse(&c, "-m m --isl 100 --isl-stddev 10 --random-seed 4 --conversation-num 40"));
    CHECK_OK(bench_pool_build(&b, &c, &corpus, t));
    CHECK(strcmp(a.conv[0].prompt, b.conv[0].prompt) != 0); /* another seed, other prompts */
    CHECK(strstr(b.conv[0].body, "max_completion_tokens") == NULL); /* no --osl: no max */
    bench_pool_deinit(&a);
    bench_pool_deinit(&b);
    bench_config_deinit(&c);

    /* mooncake trace: shared hash ids give shared prefixes; lengths follow the formula */
    char path[] = "/tmp/test_bench_traceXXXXXX";
    int fd = mkstemp(path);
    const char *trace = "{\"timestamp\": 0, \"input_length\": 20, \"output_length\": 5, "
                        "\"hash_ids\": [1, 2, 3]}\n"
                        "\n"
                        "{\"timestamp\": 50, \"input_length\": 18, \"output_length\": 6, "
                        "\"hash_ids\": [1, 2, 4]}\n"
                        "{\"timestamp\": 70, \"input_length\": 9, \"output_length\": 1}\n";
    CHECK(write(fd, trace, strlen(trace)) == (ssize_t)strlen(trace));
    close(fd);
    char line[600];
    snprintf(line, sizeof line,
             "-m m --input-file %s --custom-dataset-type mooncake_trace "
             "--isl-block-size 8 --tokenizer words",
             path);
    CHECK_OK(parse(&c, line));
    CHECK_OK(bench_pool_build(&a, &c, &corpus, t));
    CHECK_EQ_INT(a.n, 3);
    CHECK(a.sequential);
    CHECK_EQ_INT(a.conv[0].isl, 20); /* (3 - 1) * 8 + 4 */
    CHECK_EQ_INT(a.conv[1].isl, 18);
    CHECK_EQ_INT(a.conv[2].isl, 9);
    CHECK_EQ_INT(a.conv[1].osl, 6);
    CHECK_EQ_INT(a.conv[1].timestamp_ms, 50);
    /* the first two blocks (16 words) are the same text */
    uint32_t *e0 = NULL, *e1 = NULL;
    size_t n0, n1, c0 = 0, c1 = 0;
    CHECK_OK(btok_bounds(t, a.conv[0].prompt, strlen(a.conv[0].prompt), &e0, &n0, &c0));
    CHECK_OK(btok_bounds(t, a.conv[1].prompt, strlen(a.conv[1].prompt), &e1, &n1, &c1));
    CHECK(e0[15] == e1[15] && memcmp(a.conv[0].prompt, a.conv[1].prompt, e0[15]) == 0);
    CHECK(strcmp(a.conv[0].prompt + e0[15], a.conv[1].prompt + e1[15]) != 0);
    free(e0);
    free(e1);
    bench_pool_deinit(&a);
    bench_config_deinit(&c);
    /* a bad trace line is an error naming file and line */
    fd = open(path, O_WRONLY | O_TRUNC);
    const char *badtrace = "{\"timestamp\": 0, \"input_length\": 20}\n{\"input_length\": \"x\"}\n";
    CHECK(write(fd, badtrace, strlen(badtrace)) == (ssize_t)strlen(badtrace));
    close(fd);
    CHECK_OK(parse(&c, line));
    CHECK_EQ_INT(bench_pool_build(&a, &c, &corpus, t), MG_EFORMAT);
    CHECK(strstr(mg_err_msg(), ":2:") != NULL);
    bench_config_deinit(&c);
    /* lengths and timestamps past what the client can hold are errors, not wrapped values */
    const char *outside[] = {"{\"input_length\": 100000000000}\n",
                             "{\"input_length\": 8, \"output_length\": -3}\n",
                             "{\"input_length\": 8, \"output_length\": 4294967297}\n",
                             "{\"input_length\": 8, \"timestamp\": 1e300}\n"};
    for (size_t i = 0; i < sizeof outside / sizeof *outside; i++) {
        fd = open(path, O_WRONLY | O_TRUNC);
        CHECK(write(fd, outside[i], strlen(outside[i])) == (ssize_t)strlen(outside[i]));
        close(fd);
        CHECK_OK(parse(&c, line));
        CHECK_MSG(bench_pool_build(&a, &c, &corpus, t) == MG_EFORMAT, "accepted %s", outside[i]);
        CHECK(strstr(mg_err_msg(), ":1:") != NULL);
        bench_pool_deinit(&a);
        bench_config_deinit(&c);
    }
    unlink(path);
    bench_corpus_deinit(&corpus);
    btok_destroy(t);

#ifdef MG_BENCH_TEST_O200K
    /* o200k, the tokenizer the recipe counts with (ranks file from tests/setup-node.sh). */
    setenv("MAGNETO_O200K_PATH", MG_BENCH_TEST_O200K, 0);
    mg_status s = btok_open(NULL, &t);
    CHECK_MSG(s == MG_OK, "o200k: %s (run tests/setup-node.sh)", mg_err_msg());
    if (s == MG_OK) {
        CHECK_EQ_INT(btok_count(t, "Hello, world!", 13), 4);
        check_exact(t, "o200k");
        btok_destroy(t);
    }
#endif
}

int main(void) {
    test_options();
    test_prompts();
    return check_done();
}
