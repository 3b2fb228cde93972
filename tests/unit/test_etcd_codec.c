/* test_etcd_codec.c - what etcd and discovery put on the wire, without a server: base64 of keys
 * and values, prefix range ends, discovery keys, and the JSON of instance and model cards
 * (round trip, defaults of absent fields, clear errors on bad input), and the client's url
 * checks. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "discovery.h"
#include "etcd.h"

static void test_b64(void) {
    /* RFC 4648 test vectors. */
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char b[16];
        size_t n = etcd_b64_encode(plain[i], strlen(plain[i]), b);
        CHECK_EQ_STR(b, enc[i]);
        CHECK_EQ_INT(n, strlen(enc[i]));
        char d[16];
        size_t dl = 99;
        CHECK_OK(etcd_b64_decode(enc[i], strlen(enc[i]), d, &dl));
        CHECK_EQ_INT(dl, strlen(plain[i]));
        CHECK(memcmp(d, plain[i], dl) == 0);
    }
    /* Every byte value survives a round trip, at every length mod 3. */
    unsigned char all[256];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)(255 - i);
    for (size_t len = 253; len <= 256; len++) {
        char e[ETCD_B64_LEN(256)];
        size_t n = etcd_b64_encode(all, len, e);
        CHECK_EQ_INT(n, ETCD_B64_LEN(len) - 1);
        unsigned char d[256];
        size_t dl = 0;
        CHECK_OK(etcd_b64_decode(e, n, d, &dl));
        CHECK_EQ_INT(dl, len);
        CHECK(memcmp(d, all, len) == 0);
    }
    /* Unpadded input is accepted; bad characters and lengths are errors. */
    char d[16];
    size_t dl = 0;
    CHECK_OK(etcd_b64_decode("Zm8", 3, d, &dl));
    CHECK_EQ_INT(dl, 2);
    CHECK_EQ_INT(etcd_b64_decode("Zm9v!A==", 8, d, &dl), MG_EPROTO);
    CHECK(strstr(mg_err_msg(), "bad character") != NULL);
    CHECK_EQ_INT(etcd_b64_decode("Zm9vY", 5, d, &dl), MG_EPROTO);
}

static void test_prefix_end(void) {
    char b[16];
    size_t n = etcd_prefix_end("abc", 3, b);
    CHECK_EQ_INT(n, 3);
    CHECK(memcmp(b, "abd", 3) == 0);
    n = etcd_prefix_end("a/", 2, b);
    CHECK(n == 2 && b[0] == 'a' && b[1] == '0'); /* '/' + 1 == '0' */
    n = etcd_prefix_end("a\xff\xff", 3, b);
    CHECK(n == 1 && b[0] == 'b');
    n = etcd_prefix_end("\xff", 1, b);
    CHECK(n == 1 && b[0] == 0);
    n = etcd_prefix_end("", 0, b);
    CHECK(n == 1 && b[0] == 0);
}

static void test_keys(void) {
    char k[128];
    CHECK_OK(disc_instance_key("magneto", "worker", 0x694d98147d54be25LL, k, sizeof k));
    CHECK_EQ_STR(k, "magneto/v1/instances/magneto/worker/694d98147d54be25");
    CHECK_OK(disc_model_key("prod", "openai/gpt-oss-120b", 0x1a, k, sizeof k));
    CHECK_EQ_STR(k, "magneto/v1/models/prod/openai/gpt-oss-120b/1a");
    CHECK_OK(disc_nccl_key("magneto", "g0", k, sizeof k));
    CHECK_EQ_STR(k, "magneto/v1/groups/magneto/g0/nccl");
    CHECK_EQ_INT(disc_instance_key("magneto", "worker", 1, k, 20), MG_EINVAL);
    CHECK_EQ_INT(disc_instance_key("", "worker", 1, k, sizeof k), MG_EINVAL);
}

static void test_instance_card(void) {
    disc_instance a = {0}, b;
    a.instance_id = (int64_t)0xf00dfacecafebeefULL; /* negative as int64: must survive */
    strcpy(a.ns, "magneto");
    strcpy(a.component, "worker");
    strcpy(a.subject, "magneto.worker.f00dfacecafebeef.generate");
    a.dp_rank = 3;
    a.dp_size = 4;
    strcpy(a.group, "g0");
    strcpy(a.host, "node-7");
    a.pid = 4242;
    a.gpu = 3;
    strcpy(a.role, "decode");
    strcpy(a.ucx_addr, "AAECAwQ=");
    char *json = NULL;
    CHECK_OK(disc_instance_encode(&a, &json));
    CHECK(json && strstr(json, "\"instance_id\":\"f00dfacecafebeef\"") != NULL);
    CHECK_OK(disc_instance_decode(json, strlen(json), &b));
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    free(json);

    /* Absent optional fields take their defaults; a numeric id is accepted too. */
    const char *min = "{\"instance_id\":26,\"component\":\"router\",\"subject\":\"s\"}";
    CHECK_OK(disc_instance_decode(min, strlen(min), &b));
    CHECK_EQ_INT(b.instance_id, 26);
    CHECK_EQ_INT(b.dp_size, 1);
    CHECK_EQ_INT(b.gpu, -1);
    CHECK_EQ_STR(b.role, "");

    /* Bad input: a clear error naming the field, never a crash. */
    const char *bad[][2] = {
        {"{\"component\":\"w\",\"subject\":\"s\"}", "instance_id"},
        {"{\"instance_id\":\"xyz\",\"component\":\"w\",\"subject\":\"s\"}", "instance_id"},
        {"{\"instance_id\":\"1\",\"subject\":\"s\"}", "component"},
        {"{\"instance_id\":\"1\",\"component\":7,\"subject\":\"s\"}", "component"},
        {"{\"instance_id\":\"1\",\"component\":\"w\",\"subject\":\"s\",\"dp_rank\":\"2\"}",
         "dp_rank"},
        {"{\"instance_id\":\"1\",\"component\":\"w\",\"subject\":\"s\",\"dp_rank\":4,\"dp_size\":"
         "4}",
         "dp_rank"},
        {"{\"instance_id\":\"1\",\"component\":\"w\",\"subject\":\"s\",\"gpu\":-5}", "gpu"},
        {"[1,2]", "not a JSON object"},
        {"{\"instance_id\":", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(disc_instance_decode(bad[i][0], strlen(bad[i][0]), &b), MG_EPROTO);
        CHECK_MSG(strstr(mg_err_msg(), bad[i][1]) != NULL, "case %zu: %s", i, mg_err_msg());
    }
    /* A string longer than its field is rejected, not truncated. */
    char big[400];
    int n = snprintf(big, sizeof big,
                     "{\"instance_id\":\"1\",\"component\":\"%0100d\",\"subject\":\"s\"}", 0);
    CHECK_EQ_INT(disc_instance_decode(big, (size_t)n, &b), MG_EPROTO);
    CHECK(strstr(mg_err_msg(), "at most 31") != NULL);
}

static void test_model_card(void) {
    disc_model a = {0}, b;
    a.instance_id = 0x7;
    strcpy(a.name, "openai/gpt-oss-120b");
    a.context_length = 131072;
    a.kv_block_size = 32;
    a.total_kv_blocks = 123456789012LL;
    a.max_batch_size = 800;
    a.max_num_tokens = 768;
    strcpy(a.tokenizer, "o200k_harmony");
    char *json = NULL;
    CHECK_OK(disc_model_encode(&a, &json));
    CHECK_OK(disc_model_decode(json, strlen(json), &b));
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    free(json);
    const char *nobs = "{\"instance_id\":\"7\",\"name\":\"m\",\"context_length\":8}";
    CHECK_EQ_INT(disc_model_decode(nobs, strlen(nobs), &b), MG_EPROTO);
    CHECK(strstr(mg_err_msg(), "kv_block_size") != NULL);
    const char *zero =
        "{\"instance_id\":\"7\",\"name\":\"m\",\"context_length\":0,\"kv_block_size\":32}";
    CHECK_EQ_INT(disc_model_decode(zero, strlen(zero), &b), MG_EPROTO);
    CHECK(strstr(mg_err_msg(), "context_length") != NULL);
}

/* A base url too long for the request buffers is refused with a clear error, not cut. */
static void test_client_url(void) {
    etcd_client *c = NULL;
    char url[ETCD_MAX_URL + 2];
    memcpy(url, "http://", 7);
    memset(url + 7, 'h', sizeof url - 8);
    url[sizeof url - 1] = 0; /* ETCD_MAX_URL + 1 characters */
    CHECK_EQ_INT(etcd_client_create(url, 0, &c), MG_EINVAL);
    CHECK(c == NULL);
    CHECK(strstr(mg_err_msg(), "at most") != NULL);
    url[ETCD_MAX_URL] = 0; /* exactly the limit: accepted (no request is made) */
    CHECK_EQ_INT(etcd_client_create(url, 0, &c), MG_OK);
    etcd_client_destroy(c);
    CHECK_EQ_INT(etcd_client_create("localhost:2379", 0, &c), MG_EINVAL);
}

int main(void) {
    test_b64();
    test_client_url();
    test_prefix_end();
    test_keys();
    test_instance_card();
    test_model_card();
    return check_done();
}
