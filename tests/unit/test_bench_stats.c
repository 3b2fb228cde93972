/* test_bench_stats.c - AIPerf's metric definitions against hand-computed cases: percentiles by
 * linear interpolation, population std, TTFT when the first chunks are empty, ITL with OSL 1,
 * the duration window without warmup, errors left out of latency statistics and counted in the
 * error summary. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "loadgen.h"
#include "sse.h"
#include "stats.h"

#define MS 1000000LL

static void test_percentiles(void) {
    double v[] = {4, 1, 3, 2};
    bench_stats s;
    bench_stats_compute(v, 4, &s);
    /* numpy: percentile([1,2,3,4], 50) = 2.5, 25 -> 1.75, 99 -> 3.97, 1 -> 1.03, 90 -> 3.7 */
    CHECK_NEAR(s.p50, 2.5, 1e-12);
    CHECK_NEAR(s.p25, 1.75, 1e-12);
    CHECK_NEAR(s.p99, 3.97, 1e-12);
    CHECK_NEAR(s.p1, 1.03, 1e-12);
    CHECK_NEAR(s.p90, 3.7, 1e-12);
    CHECK_NEAR(s.avg, 2.5, 1e-12);
    CHECK_NEAR(s.min, 1, 0);
    CHECK_NEAR(s.max, 4, 0);
    CHECK_NEAR(s.sum, 10, 0);
    CHECK_EQ_INT(s.count, 4);
    /* population std (ddof = 0): sqrt(1.25) */
    CHECK_NEAR(s.std, 1.118033988749895, 1e-12);
    double w[] = {2, 4, 4, 4, 5, 5, 7, 9};
    bench_stats_compute(w, 8, &s);
    CHECK_NEAR(s.std, 2.0, 1e-12);
    CHECK_NEAR(s.p75, 5.5, 1e-12); /* rank 5.25 between 5 and 7 */
    double one[] = {7};
    bench_stats_compute(one, 1, &s);
    CHECK_NEAR(s.p1, 7, 0);
    CHECK_NEAR(s.p99, 7, 0);
    CHECK_NEAR(s.std, 0, 0);
    bench_stats_compute(NULL, 0, &s);
    CHECK_EQ_INT(s.count, 0);
    double two[] = {10, 20};
    CHECK_NEAR(bench_percentile(two, 2, 1), 10.1, 1e-12);
    CHECK_NEAR(bench_percentile(two, 2, 95), 19.5, 1e-12);
}

static void event(bench_record *r, const char *data, int64_t t) {
    CHECK(bench_record_event(r, "", data, strlen(data), t) >= 0);
}

/* A streamed record: start at t0, then the given events at the given ms offsets. */
static void stream_rec(bench_record *r, bench_phase ph, int64_t t0, int osl) {
    memset(r, 0, sizeof *r);
    r->phase = ph;
    r->streaming = true;
    r->start_ns = t0;
    r->start_wall_ns = 1700000000000000000LL + t0;
    r->usage_completion_tokens = -1;
    r->isl = 10;
    r->output_tokens = osl;
}

static void test_ttft_empty_first_chunks(void) {
    bench_record r;
    stream_rec(&r, BENCH_PROFILING, 1000 * MS, 0);
    /* role-only, then an empty content, then a null content: none is a response */
    event(&r, "{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}",
          1005 * MS);
    event(&r, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"}}]}", 1010 * MS);
    event(&r, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":null}}]}", 1012 * MS);
    CHECK_EQ_INT(r.n_resp, 0);
    event(&r, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}", 1030 * MS);
    event(&r, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"}}]}", 1040 * MS);
    /* usage-only chunk and [DONE]: not responses */
    event(&r, "{\"choices\":[],\"usage\":{\"completion_tokens\":2}}", 1050 * MS);
    event(&r, "[DONE]", 1060 * MS);
    CHECK_EQ_INT(r.n_resp, 2);
    CHECK_EQ_STR(r.text, "Hi there");
    CHECK_EQ_INT(r.usage_completion_tokens, 2);
    r.output_tokens = 2;
    double x;
    CHECK(bench_metric_ttft(&r, &x));
    CHECK_NEAR(x, 30.0, 1e-9);
    CHECK(bench_metric_request_latency(&r, &x)); /* last response, not [DONE] */
    CHECK_NEAR(x, 40.0, 1e-9);
    CHECK(bench_metric_ttst(&r, &x));
    CHECK_NEAR(x, 10.0, 1e-9);
    CHECK(bench_metric_itl(&r, &x)); /* (40 - 30) / (2 - 1) */
    CHECK_NEAR(x, 10.0, 1e-9);
    CHECK(bench_metric_tps_user(&r, &x));
    CHECK_NEAR(x, 100.0, 1e-9);
    bench_record_free(&r);

    /* Reasoning text counts as a response for TTFT; TTFO waits for content. */
    stream_rec(&r, BENCH_PROFILING, 0, 0);
    event(&r, "{\"choices\":[{\"delta\":{\"reasoning_content\":\"think\"}}]}", 7 * MS);
    event(&r, "{\"choices\":[{\"delta\":{\"content\":\"answer\"}}]}", 19 * MS);
    CHECK(bench_metric_ttft(&r, &x));
    CHECK_NEAR(x, 7.0, 1e-9);
    CHECK(bench_metric_ttfo(&r, &x));
    CHECK_NEAR(x, 19.0, 1e-9);
    CHECK_EQ_STR(r.reasoning, "think");
    CHECK_EQ_STR(r.text, "answer");
    bench_record_free(&r);
}

static void test_itl_osl1(void) {
    bench_record r;
    stream_rec(&r, BENCH_PROFILING, 0, 1);
    event(&r, "{\"choices\":[{\"delta\":{\"content\":\"x\"}}]}", 5 * MS);
    double x;
    CHECK(bench_metric_ttft(&r, &x));
    CHECK(!bench_metric_itl(&r, &x)); /* needs OSL >= 2 */
    CHECK(!bench_metric_tps_user(&r, &x));
    CHECK(!bench_metric_ttst(&r, &x));
    bench_summary s;
    CHECK(bench_summarize(&r, 1, &s));
    CHECK(!s.has[BM_ITL]);
    CHECK(s.has[BM_TTFT]);
    CHECK_EQ_INT(s.request_count, 1);
    bench_summary_free(&s);
    bench_record_free(&r);
    /* One chunk carrying three tokens: ITL from the token count, not the chunk count. */
    stream_rec(&r, BENCH_PROFILING, 0, 3);
    event(&r, "{\"choices\":[{\"delta\":{\"content\":\"a b c\"}}]}", 10 * MS);
    CHECK(bench_metric_itl(&r, &x));
    CHECK_NEAR(x, 0.0, 1e-12);
    bench_record_free(&r);
}

static void test_non_streaming(void) {
    bench_record r;
    memset(&r, 0, sizeof r);
    r.phase = BENCH_PROFILING;
    r.start_ns = 100 * MS;
    const char *body = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"ok\"}}],"
                       "\"usage\":{\"completion_tokens\":1}}";
    CHECK_EQ_INT(bench_record_body(&r, body, strlen(body), 350 * MS), 1);
    r.end_ns = 351 * MS;
    r.output_tokens = 1;
    double x;
    CHECK(bench_metric_request_latency(&r, &x));
    CHECK_NEAR(x, 251.0, 1e-9);        /* to the end of the body */
    CHECK(!bench_metric_ttft(&r, &x)); /* TTFT is for streaming only */
    bench_record_free(&r);
}

static void test_window_errors(void) {
    bench_record recs[6];
    /* warmup: 0..50 ms, earlier and longer than anything else; must not count */
    stream_rec(&recs[0], BENCH_WARMUP, 0, 2);
    event(&recs[0], "{\"choices\":[{\"delta\":{\"content\":\"w\"}}]}", 10 * MS);
    event(&recs[0], "{\"choices\":[{\"delta\":{\"content\":\"w\"}}]}", 50 * MS);
    /* profiling: A 100..140 (TTFT 20), B 110..170 (TTFT 30) */
    stream_rec(&recs[1], BENCH_PROFILING, 100 * MS, 2);
    event(&recs[1], "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}", 120 * MS);
    event(&recs[1], "{\"choices\":[{\"delta\":{\"content\":\"b\"}}]}", 140 * MS);
    stream_rec(&recs[2], BENCH_PROFILING, 110 * MS, 4);
    event(&recs[2], "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}", 140 * MS);
    event(&recs[2], "{\"choices\":[{\"delta\":{\"content\":\"b\"}}]}", 170 * MS);
    /* errors: a 500 that started first and a reset that ended last: neither moves the window
     * nor the latency statistics */
    stream_rec(&recs[3], BENCH_PROFILING, 90 * MS, 0);
    bench_record_fail(&recs[3], 500, "Internal Server Error", "boom");
    recs[3].end_ns = 95 * MS;
    stream_rec(&recs[4], BENCH_PROFILING, 105 * MS, 0);
    event(&recs[4], "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}", 106 * MS);
    bench_record_fail(&recs[4], 0, "ClientConnectionError", "reset");
    recs[4].end_ns = 900 * MS;
    stream_rec(&recs[5], BENCH_PROFILING, 120 * MS, 0);
    bench_record_fail(&recs[5], 500, "Internal Server Error", "boom");
    bench_summary s;
    CHECK(bench_summarize(recs, 6, &s));
    CHECK_EQ_INT(s.request_count, 2);
    CHECK_EQ_INT(s.error_request_count, 3);
    CHECK_NEAR(s.benchmark_duration_s, 0.070, 1e-12); /* 100 ms .. 170 ms */
    CHECK_NEAR(s.request_throughput, 2 / 0.070, 1e-9);
    CHECK_EQ_INT(s.total_osl, 6);
    CHECK_EQ_INT(s.total_isl, 20);
    CHECK_NEAR(s.output_token_throughput, 6 / 0.070, 1e-9);
    CHECK_NEAR(s.total_token_throughput, 26 / 0.070, 1e-9);
    CHECK_EQ_INT(s.rec[BM_TTFT].count, 2);
    CHECK_NEAR(s.rec[BM_TTFT].avg, 25.0, 1e-9);
    CHECK_NEAR(s.rec[BM_TTFT].max, 30.0, 1e-9);
    CHECK_NEAR(s.rec[BM_REQUEST_LATENCY].max, 60.0, 1e-9);
    /* ITL: A (40-20)/1 = 20, B (60-30)/3 = 10 */
    CHECK_NEAR(s.rec[BM_ITL].avg, 15.0, 1e-9);
    CHECK_EQ_INT(s.rec[BM_ICL].count, 2);
    CHECK_EQ_INT(s.min_request_wall_ns, 1700000000000000000LL + 100 * MS);
    CHECK_EQ_INT(s.max_response_wall_ns, 1700000000000000000LL + 170 * MS);
    CHECK_EQ_INT(s.n_errors, 2);
    CHECK_EQ_STR(s.errors[0].type, "Internal Server Error"); /* most frequent first */
    CHECK_EQ_INT(s.errors[0].count, 2);
    CHECK_EQ_INT(s.errors[0].code, 500);
    CHECK_EQ_STR(s.errors[1].type, "ClientConnectionError");
    CHECK_EQ_INT(s.total_error_isl, 30);
    bench_summary_free(&s);
    /* a record dropped at the end of the grace period is neither a result nor an error */
    recs[5].dropped = true;
    CHECK(bench_summarize(recs, 6, &s));
    CHECK_EQ_INT(s.error_request_count, 2);
    CHECK_EQ_INT(s.dropped_count, 1);
    bench_summary_free(&s);
    for (int i = 0; i < 6; i++) bench_record_free(&recs[i]);
}

static void test_stream_errors(void) {
    bench_record r;
    stream_rec(&r, BENCH_PROFILING, 0, 0);
    CHECK_EQ_INT(bench_record_event(&r, "", "{\"choices\":[{\"delta\":{\"content\":\"tru", 36, MS),
                 -1);
    CHECK_EQ_STR(r.err_type, "SSEParseError");
    bench_record_free(&r);
    stream_rec(&r, BENCH_PROFILING, 0, 0);
    const char *e = "{\"error\":{\"message\":\"overloaded\",\"code\":503}}";
    CHECK_EQ_INT(bench_record_event(&r, "", e, strlen(e), MS), -1);
    CHECK_EQ_STR(r.err_type, "ServerError");
    CHECK_EQ_STR(r.err_msg, "overloaded");
    CHECK_EQ_INT(r.err_code, 503);
    bench_record_free(&r);
    stream_rec(&r, BENCH_PROFILING, 0, 0);
    CHECK_EQ_INT(bench_record_event(&r, "error", "bad", 3, MS), -1);
    CHECK_EQ_STR(r.err_type, "SSEError");
    bench_record_free(&r);
}

static void test_goodput(void) {
    bench_slo slo[8];
    const char *bad;
    CHECK_EQ_INT(bench_slo_parse("time_to_first_token:25 inter_token_latency:15", slo, 8, &bad), 2);
    CHECK_EQ_INT(slo[0].metric, BM_TTFT);
    CHECK_NEAR(slo[1].threshold, 15, 0);
    CHECK_EQ_INT(bench_slo_parse("ttft:5", slo, 8, &bad), -1);
    CHECK_EQ_STR(bad, "ttft:5");
    CHECK_EQ_INT(bench_slo_parse("request_latency:x", slo, 8, &bad), -1);
    /* A: TTFT 20, ITL 20. B: TTFT 30, ITL 10. C: an error. */
    bench_record recs[3];
    stream_rec(&recs[0], BENCH_PROFILING, 0, 2);
    event(&recs[0], "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}", 20 * MS);
    event(&recs[0], "{\"choices\":[{\"delta\":{\"content\":\"b\"}}]}", 40 * MS);
    stream_rec(&recs[1], BENCH_PROFILING, 0, 4);
    event(&recs[1], "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}", 30 * MS);
    event(&recs[1], "{\"choices\":[{\"delta\":{\"content\":\"b\"}}]}", 60 * MS);
    stream_rec(&recs[2], BENCH_PROFILING, 0, 0);
    bench_record_fail(&recs[2], 500, "x", "y");
    bench_summary s;
    CHECK(bench_summarize(recs, 3, &s));
    CHECK_EQ_INT(bench_slo_parse("time_to_first_token:25", slo, 8, &bad), 1);
    bench_summary_goodput(&s, recs, 3, slo, 1);
    CHECK_EQ_INT(s.good_request_count, 1); /* A only */
    CHECK_NEAR(s.goodput, 1 / 0.060, 1e-9);
    CHECK_EQ_INT(bench_slo_parse("inter_token_latency:15", slo, 8, &bad), 1);
    bench_summary_goodput(&s, recs, 3, slo, 1);
    CHECK_EQ_INT(s.good_request_count, 1); /* B only */
    CHECK(bench_record_good(&recs[1], slo, 1));
    CHECK_EQ_INT(bench_slo_parse("output_token_throughput_per_user:60", slo, 8, &bad), 1);
    bench_summary_goodput(&s, recs, 3, slo, 1); /* A 50 tok/s, B 100 tok/s: at least 60 */
    CHECK(bench_record_good(&recs[1], slo, 1) && !bench_record_good(&recs[0], slo, 1));
    CHECK_EQ_INT(bench_slo_parse("time_to_first_token:25,inter_token_latency:15", slo, 8, &bad), 2);
    bench_summary_goodput(&s, recs, 3, slo, 2);
    CHECK_EQ_INT(s.good_request_count, 0);
    bench_summary_free(&s);
    for (int i = 0; i < 3; i++) bench_record_free(&recs[i]);
}

/* Error text cut inside a UTF-8 sequence, or bytes that are no UTF-8 at all, come out valid:
 * the exporters write them as JSON strings. */
static void test_error_text_utf8(void) {
    bench_record r = {0};
    /* "日本" cut after the first byte of 本, a stray 0xff, an overlong '/', a surrogate */
    bench_record_fail(&r, 400, "Bad \xff Request", "%.*s|\xff|\xc0\xaf|\xed\xa0\x80|ok \xc3\xa9", 4,
                      "\xe6\x97\xa5\xe6\x9c\xac");
    CHECK_EQ_STR(r.err_type, "Bad ? Request");
    CHECK_EQ_STR(r.err_msg, "\xe6\x97\xa5?|?|??|???|ok \xc3\xa9");
    bench_record_free(&r);
    bench_record t = {0};
    bench_record_fail(&t, 0, "x", "\xf0\x9f\x98\x80 \xe6\x97"); /* emoji kept, tail cut */
    CHECK_EQ_STR(t.err_msg, "\xf0\x9f\x98\x80 ??");
    bench_record_free(&t);
}

int main(void) {
    test_error_text_utf8();
    test_percentiles();
    test_ttft_empty_first_chunks();
    test_itl_osl1();
    test_non_streaming();
    test_window_errors();
    test_stream_errors();
    test_goodput();
    return check_done();
}
