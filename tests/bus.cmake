# NATS wrapper and token-stream tests against a real nats-server. One binary; each case is its
# own ctest entry (`test_bus <case>`). mg_testspawn (tests/etcd.cmake) starts private servers.
if(TARGET mg_runtime)
  add_executable(test_bus integration/test_bus.c)
  target_link_libraries(test_bus PRIVATE mg_runtime mg_testspawn Threads::Threads)
  target_include_directories(test_bus PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  foreach(case pubsub queue gap timeout restart many close_race)
    add_test(NAME test_bus_${case} COMMAND test_bus ${case})
    set_tests_properties(test_bus_${case} PROPERTIES TIMEOUT 120 LABELS integration)
  endforeach()
endif()
