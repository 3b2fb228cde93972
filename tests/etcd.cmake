# etcd client and discovery tests, and mg_testspawn: the helper that starts real nats-server and
# etcd processes on free loopback ports for tests that must stop, kill or restart a server.
add_library(mg_testspawn STATIC ${CMAKE_CURRENT_LIST_DIR}/integration/spawn.c)
target_include_directories(mg_testspawn PUBLIC ${CMAKE_CURRENT_LIST_DIR}/integration)
target_link_libraries(mg_testspawn PUBLIC Threads::Threads)

if(TARGET mg_runtime)
  mg_test(test_etcd_codec SOURCES unit/test_etcd_codec.c LIBS mg_runtime LABELS unit)
  mg_test(test_etcd SOURCES integration/test_etcd.c LIBS mg_runtime mg_testspawn
          LABELS integration)
  mg_test(test_discovery SOURCES integration/test_discovery.c LIBS mg_runtime mg_testspawn
          LABELS integration)
endif()
