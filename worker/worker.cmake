# magneto-worker: the serving executable (NATS, etcd, protobuf, metrics) around the engine.
add_executable(magneto-worker ${CMAKE_CURRENT_SOURCE_DIR}/worker.c)
target_link_libraries(magneto-worker PRIVATE mg_engine mg_mocker mg_runtime mg_proto)
if(TARGET mg_cpu)
  target_link_libraries(magneto-worker PRIVATE mg_cpu)
  target_compile_definitions(magneto-worker PRIVATE MG_HAVE_CPU)
endif()
if(TARGET mg_cuda)
  target_link_libraries(magneto-worker PRIVATE mg_cuda)
  target_compile_definitions(magneto-worker PRIVATE MG_HAVE_CUDA)
  # the kernels are C++ (CUDA): link with the C++ runtime
  set_target_properties(magneto-worker PROPERTIES LINKER_LANGUAGE CXX)
endif()
