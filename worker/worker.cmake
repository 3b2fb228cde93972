# magneto-worker: the serving executable (NATS, etcd, protobuf, metrics) around the engine.
add_executable(magneto-worker ${CMAKE_CURRENT_SOURCE_DIR}/worker.c)
target_link_libraries(magneto-worker PRIVATE mg_engine mg_mocker mg_runtime mg_proto)
if(TARGET mg_cpu)
  target_link_libraries(magneto-worker PRIVATE mg_cpu)
  target_compile_definitions(magneto-worker PRIVATE MG_HAVE_CPU)
endif()
