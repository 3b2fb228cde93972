# Engine core tests (no servers): KV pool, sampling, scheduler with a toy backend, and the engine
# thread over the mocker backend.
if(TARGET mg_engine)
  foreach(t test_kv test_sampling test_sched)
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/unit/${t}.c)
      mg_test(${t} SOURCES unit/${t}.c LIBS mg_engine LABELS unit)
    endif()
  endforeach()
endif()
if(TARGET mg_mocker AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_mocker.c)
  mg_test(test_mocker SOURCES unit/test_mocker.c LIBS mg_mocker LABELS unit)
endif()
