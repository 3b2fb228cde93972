# Engine core tests (no servers): KV pool, sampling, scheduler with a toy backend, and the engine
# thread over the mocker backend.
if(TARGET mg_engine)
  foreach(t test_kv test_sampling test_sched test_sched_window)
    if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/unit/${t}.c)
      mg_test(${t} SOURCES unit/${t}.c LIBS mg_engine LABELS unit)
    endif()
  endforeach()
endif()
if(TARGET mg_mocker AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_mocker.c)
  mg_test(test_mocker SOURCES unit/test_mocker.c LIBS mg_mocker LABELS unit)
endif()
# The scheduler over the real CPU backend, on a checkpoint written at test time.
if(TARGET mg_cpu AND TARGET mg-mkckpt AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_sched_cpu.c)
  mg_test(test_sched_cpu SOURCES unit/test_sched_cpu.c LIBS mg_engine mg_cpu LABELS unit)
  add_dependencies(test_sched_cpu mg-mkckpt)
  set_tests_properties(test_sched_cpu PROPERTIES ENVIRONMENT
    "MG_MKCKPT=$<TARGET_FILE:mg-mkckpt>;MG_CKPT_DIR=${CMAKE_BINARY_DIR}/ckpt/test_sched_cpu")
endif()
# The CPU backend's window pool for sliding layers against the same backend without one.
if(TARGET mg_cpu AND TARGET mg-mkckpt AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_cpu_window.c)
  mg_test(test_cpu_window SOURCES unit/test_cpu_window.c LIBS mg_engine mg_cpu LABELS unit)
  add_dependencies(test_cpu_window mg-mkckpt)
  set_tests_properties(test_cpu_window PROPERTIES ENVIRONMENT
    "MG_MKCKPT=$<TARGET_FILE:mg-mkckpt>;MG_CKPT_DIR=${CMAKE_BINARY_DIR}/ckpt/test_cpu_window")
endif()
# The same on cuda_ref's backend form (host code, built with -DMG_CUDA=ON), float32 and bf16.
if(TARGET mg_cuda_ref AND TARGET mg-mkckpt AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_cpu_window.c)
  mg_test(test_cuda_ref_window SOURCES unit/test_cpu_window.c LIBS mg_engine mg_cpu mg_cuda_ref
          LABELS unit)
  target_compile_definitions(test_cuda_ref_window PRIVATE MG_TEST_CUDA_REF)
  add_dependencies(test_cuda_ref_window mg-mkckpt)
  set_tests_properties(test_cuda_ref_window PROPERTIES ENVIRONMENT
    "MG_MKCKPT=$<TARGET_FILE:mg-mkckpt>;MG_CKPT_DIR=${CMAKE_BINARY_DIR}/ckpt/test_cuda_ref_window")
endif()
