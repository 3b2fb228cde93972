# Model loading and the CPU backend. The checkpoint tests make their checkpoints at test time
# with mg-mkckpt into the build folder (nothing is committed but the small golden files).
if(TARGET mg_cpu AND TARGET mg-mkckpt)
  mg_test(test_model SOURCES unit/test_model.c LIBS mg_model LABELS unit)
  add_dependencies(test_model mg-mkckpt)
  set_tests_properties(test_model PROPERTIES ENVIRONMENT
    "MG_MKCKPT=$<TARGET_FILE:mg-mkckpt>;MG_CKPT_DIR=${CMAKE_BINARY_DIR}/ckpt/test_model")

  mg_test(test_cpu SOURCES unit/test_cpu.c LIBS mg_cpu LABELS unit)
  add_dependencies(test_cpu mg-mkckpt)
  set_tests_properties(test_cpu PROPERTIES ENVIRONMENT
    "MG_MKCKPT=$<TARGET_FILE:mg-mkckpt>;MG_CKPT_DIR=${CMAKE_BINARY_DIR}/ckpt/test_cpu")

  set(MG_MODEL_GOLDEN ${CMAKE_CURRENT_LIST_DIR}/golden/model)
  foreach(name tiny mid)
    if(EXISTS ${MG_MODEL_GOLDEN}/${name}.golden)
      set(t test_cpu_golden_${name})
      mg_test(${t} SOURCES unit/test_cpu_golden.c LIBS mg_cpu LABELS unit)
      add_dependencies(${t} mg-mkckpt)
      set_tests_properties(${t} PROPERTIES ENVIRONMENT
        "MG_MKCKPT=$<TARGET_FILE:mg-mkckpt>;MG_GOLDEN=${MG_MODEL_GOLDEN}/${name}.golden;MG_CKPT_DIR=${CMAKE_BINARY_DIR}/ckpt/${t}")
    endif()
  endforeach()
endif()
