/* main.c - magneto-frontend: parse the settings table, run the frontend until SIGINT/SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "frontend.h"
#include "log.h"

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
    stop_flag = 1;
}

int main(int argc, char **argv) {
    mg_log_init("frontend", -1);
    char *host = NULL, *ns = NULL, *nats = NULL, *etcd = NULL, *tokenizer = NULL, *mode = NULL,
         *cfgfile = NULL;
    int64_t port = 8000, threads = 1, migration = 0, max_body = 8 << 20, timeout_ms = 300000;
    mg_cfg_opt opts[] = {
        {"config", MG_CFG_YAML, &cfgfile, NULL, 1, 0, "YAML file with any of these settings", NULL},
        {"host", MG_CFG_STR, &host, "0.0.0.0", 1, 0, "HTTP bind address", NULL},
        {"http-port", MG_CFG_INT, &port, "8000", 0, 65535, "HTTP port (0: any free port)", NULL},
        {"http-threads", MG_CFG_INT, &threads, "1", 1, 256, "HTTP server threads", NULL},
        {"namespace", MG_CFG_STR, &ns, "magneto", 1, 0, "Deployment namespace", NULL},
        {"nats-url", MG_CFG_STR, &nats, NULL, 1, 0,
         "NATS server (default: MAGNETO_NATS_URL or nats://127.0.0.1:4222)", NULL},
        {"etcd-url", MG_CFG_STR, &etcd, NULL, 1, 0,
         "etcd endpoint (default: MAGNETO_ETCD_URL or http://127.0.0.1:2379)", NULL},
        {"tokenizer", MG_CFG_STR, &tokenizer, NULL, 1, 0,
         "o200k_harmony tokenizer: a .tiktoken ranks file or a checkpoint folder", NULL},
        {"router-mode", MG_CFG_STR, &mode, "round-robin", 1, 0, "round-robin | random | kv", NULL},
        {"migration-limit", MG_CFG_INT, &migration, "0", 0, 100,
         "Times a request may move to another worker when its worker is lost", NULL},
        {"max-body-bytes", MG_CFG_INT, &max_body, "8388608", 1024, 1 << 30,
         "Largest request body (larger: 413)", NULL},
        {"stream-timeout-ms", MG_CFG_INT, &timeout_ms, "300000", 1000, 86400000,
         "Silence after which a worker's stream counts as lost", NULL},
    };
    int n = sizeof opts / sizeof opts[0];
    mg_status s = mg_cfg_parse(opts, n, argc, argv, "magneto-frontend",
                               "OpenAI-compatible HTTP frontend (chat and completions, SSE).");
    if (s == MG_ECANCELED) return 0;
    if (s) {
        fprintf(stderr, "magneto-frontend: %s\n", mg_err_msg());
        return 2;
    }
    fe_config cfg = {.host = host,
                     .port = (int)port,
                     .http_threads = (int)threads,
                     .ns = ns,
                     .nats_url = nats,
                     .etcd_url = etcd,
                     .tokenizer = tokenizer,
                     .migration_limit = (int)migration,
                     .max_body = (size_t)max_body,
                     .stream_timeout_ms = (int)timeout_ms};
    if (router_mode_parse(mode, &cfg.router_mode)) {
        fprintf(stderr, "magneto-frontend: --router-mode: %s\n", mg_err_msg());
        mg_cfg_free(opts, n);
        return 2;
    }
#ifdef MG_DEFAULT_TOKENIZER
    if (!tokenizer && access(MG_DEFAULT_TOKENIZER, R_OK) == 0) {
        MG_INFO("no --tokenizer given: using %s", MG_DEFAULT_TOKENIZER);
        cfg.tokenizer = MG_DEFAULT_TOKENIZER;
    }
#endif
    if (!cfg.tokenizer)
        MG_WARN("no tokenizer (--tokenizer or MAGNETO_TOKENIZER): only token-id prompts are "
                "served and output is not detokenized");
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    frontend *fe;
    s = frontend_create(&cfg, &fe);
    if (s) {
        MG_LOG_ERR("magneto-frontend: start");
        mg_cfg_free(opts, n);
        return 1;
    }
    /* Tell launchers the port (useful with --http-port 0). */
    printf("magneto-frontend listening on port %d\n", frontend_port(fe));
    fflush(stdout);
    while (!stop_flag) pause();
    MG_INFO("stopping");
    frontend_destroy(fe);
    mg_cfg_free(opts, n);
    return 0;
}
