# etcd client and discovery tests, and mg_testspawn: the helper that starts real nats-server and
# etcd processes on free loopback ports for tests that must stop, kill or restart a server.
add_library(mg_testspawn STATIC integration/spawn.c)
target_include_directories(mg_testspawn PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/integration)

if(TARGET mg_runtime)
endif()
