# Prometheus registry (unit) and the per-process HTTP endpoint fetched with libcurl and checked
# with promtool (integration: needs no NATS or etcd, only loopback and promtool on PATH).
if(MG_SERVING)
  mg_test(test_metrics SOURCES unit/test_metrics.c LIBS mg_runtime LABELS unit)
  mg_test(test_sysserver SOURCES integration/test_sysserver.c LIBS mg_runtime LABELS integration)
endif()
