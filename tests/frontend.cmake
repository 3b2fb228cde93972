# Frontend tests: the OpenAI schema and stop strings (unit), the HTTP layer through libcurl
# (unit: loopback only), and the frontend against real nats-server, etcd and workers
# (integration).
if(TARGET mg_frontend_http)
  mg_test(test_openai SOURCES unit/test_openai.c LIBS mg_frontend_http LABELS unit)
  mg_test(test_frontend_http SOURCES unit/test_frontend_http.c LIBS mg_frontend_http
          PkgConfig::CURL LABELS unit)
endif()
if(TARGET mg_frontend)
  mg_test(test_frontend SOURCES integration/test_frontend.c LIBS mg_frontend mg_testspawn
          PkgConfig::CURL LABELS integration)
  target_compile_definitions(test_frontend PRIVATE MG_TOK_RANKS="${MG_TOK_RANKS}")
endif()
