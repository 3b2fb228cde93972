# Frontend tests: the OpenAI schema and stop strings (unit), the HTTP layer through libcurl
# (unit: loopback only), and the frontend against real nats-server, etcd and workers
# (integration).
if(TARGET mg_frontend_http)
  mg_test(test_openai SOURCES unit/test_openai.c LIBS mg_frontend_http LABELS unit)
  mg_test(test_frontend_http SOURCES unit/test_frontend_http.c LIBS mg_frontend_http
          PkgConfig::CURL LABELS unit)
endif()
if(TARGET mg_router)
  mg_test(test_frontend_router SOURCES unit/test_frontend_router.c LIBS mg_router LABELS unit)
endif()
if(TARGET mg_frontend)
  mg_test(test_frontend SOURCES integration/test_frontend.c e2e/scripted_worker.c
          LIBS mg_frontend mg_testspawn PkgConfig::CURL LABELS integration)
  target_include_directories(test_frontend PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/e2e)
  target_compile_definitions(test_frontend PRIVATE MG_TOK_RANKS="${MG_TOK_RANKS}")
endif()
# The scripted workers as a process, for tests/e2e/run.sh and the frontend benchmark.
if(TARGET mg_frontend)
  add_executable(magneto-scripted-worker e2e/scripted_worker_main.c e2e/scripted_worker.c)
  target_include_directories(magneto-scripted-worker PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/e2e)
  target_link_libraries(magneto-scripted-worker PRIVATE mg_runtime mg_proto mg_tok)
endif()
# End to end through the openai npm client and curl (tests/e2e/run.sh): scripted workers (exact
# reasoning_content and tool calls), mocker workers, and CPU workers on the tiny checkpoint.
find_program(MG_NODE node)
if(MG_NODE AND TARGET magneto-frontend AND TARGET magneto-scripted-worker)
  # 2,048 concurrent streams held by one frontend (magneto-frontend-bench as the clients).
  add_test(NAME e2e_frontend_many_clients
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/many_clients.sh ${CMAKE_BINARY_DIR} 2048)
  set_tests_properties(e2e_frontend_many_clients PROPERTIES TIMEOUT 300 LABELS "integration;e2e")
  add_test(NAME e2e_frontend_scripted
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/run.sh ${CMAKE_BINARY_DIR} scripted 2)
  set_tests_properties(e2e_frontend_scripted PROPERTIES TIMEOUT 300 LABELS "integration;e2e")
  if(TARGET magneto-worker)
    add_test(NAME e2e_frontend_mocker
             COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/run.sh ${CMAKE_BINARY_DIR} mocker 2)
    set_tests_properties(e2e_frontend_mocker PROPERTIES TIMEOUT 300 LABELS "integration;e2e")
    # Disconnect frees the worker's sequence; SIGKILL mid-stream with and without migration.
    add_test(NAME e2e_frontend_faults
             COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/faults.sh ${CMAKE_BINARY_DIR})
    set_tests_properties(e2e_frontend_faults PROPERTIES TIMEOUT 300 LABELS "integration;e2e")
  endif()
  if(TARGET magneto-worker AND TARGET mg_cpu AND TARGET mg-mkckpt)
    add_test(NAME e2e_frontend_cpu
             COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/run.sh ${CMAKE_BINARY_DIR} cpu 2)
    set_tests_properties(e2e_frontend_cpu PROPERTIES TIMEOUT 300 LABELS "integration;e2e")
  endif()
endif()
