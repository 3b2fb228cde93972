# The worker executable against real nats-server and etcd (tests/run.sh starts them).
if(MG_SERVING AND TARGET magneto-worker AND TARGET magneto-client)
  add_test(NAME worker_streams
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/worker_streams.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(worker_streams PROPERTIES TIMEOUT 120 LABELS integration)
endif()
