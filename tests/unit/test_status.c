/* test_status.c - status names, the thread-local error record and log formatting. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "status.h"

static mg_status fail_here(void) {
    return MG_ERRF(MG_EINVAL, "field %s: %d is too large", "max_tokens", 99);
}

static size_t read_all(int fd, char *buf, size_t cap) {
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, cap - 1);
    buf[n > 0 ? n : 0] = 0;
    return n > 0 ? (size_t)n : 0;
}

int main(void) {
    CHECK_EQ_STR(mg_status_str(MG_OK), "ok");
    CHECK_EQ_STR(mg_status_str(MG_EGAP), "sequence gap");
    CHECK_EQ_STR(mg_status_str((mg_status)9999), "unknown status");

    CHECK_EQ_INT(fail_here(), MG_EINVAL);
    CHECK_EQ_STR(mg_err_msg(), "field max_tokens: 99 is too large");
    CHECK(strstr(mg_err_file(), "test_status.c") != NULL);
    CHECK(mg_err_line() > 0);
    mg_err_clear();
    CHECK_EQ_STR(mg_err_msg(), "");

    char path[] = "/tmp/mg_test_log_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    mg_log_init("tester", 3);
    mg_log_set_fd(fd);
    mg_log_set_level(MG_LOG_WARN);
    int evaluated = 0;
    MG_INFO("dropped %d", ++evaluated);
    CHECK_EQ_INT(evaluated, 0); /* level checked before the arguments are evaluated */
    MG_WARN("kept %d", 7);
    char buf[4096];
    read_all(fd, buf, sizeof(buf));
    CHECK(strstr(buf, "warn  tester[3]") != NULL);
    CHECK(strstr(buf, "kept 7") != NULL);
    CHECK(strstr(buf, "dropped") == NULL);

    ftruncate(fd, 0);
    lseek(fd, 0, SEEK_SET);
    mg_log_set_json(true);
    MG_LOGR(MG_LOG_ERROR, "req-1", "quote \" and\nnewline");
    read_all(fd, buf, sizeof(buf));
    CHECK(strstr(buf, "\"level\":\"error\"") != NULL);
    CHECK(strstr(buf, "\"component\":\"tester\",\"rank\":3") != NULL);
    CHECK(strstr(buf, "\"request_id\":\"req-1\"") != NULL);
    CHECK(strstr(buf, "quote \\\" and\\nnewline") != NULL);
    /* A request id longer than the record (ids come from clients) must not push the writes past
     * the line buffer: the record stays one line with the message in it. */
    ftruncate(fd, 0);
    lseek(fd, 0, SEEK_SET);
    static char long_id[6000];
    memset(long_id, 'r', sizeof(long_id) - 1);
    MG_LOGR(MG_LOG_ERROR, long_id, "after a long id");
    size_t got = read_all(fd, buf, sizeof(buf));
    CHECK(got > 0 && got < sizeof(buf));
    CHECK(strstr(buf, "after a long id\"}\n") != NULL);
    CHECK(strchr(buf, '\n') == buf + got - 1);
    mg_log_level l;
    CHECK(mg_log_level_parse("DEBUG", &l) && l == MG_LOG_DEBUG);
    CHECK(!mg_log_level_parse("loud", &l));
    close(fd);
    return check_done();
}
