# The relocatable bundle (deploy/bundle/make-bundle.sh): made from this build, moved, and run
# with the system's copies of its libraries hidden (tests/integration/bundle.sh). It starts its
# own nats-server and etcd from the bundle, so it needs no servers from tests/run.sh.
if(MG_SERVING AND TARGET magneto-worker AND TARGET magneto-frontend AND TARGET magneto-bench)
  add_test(NAME bundle_run
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/bundle.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(bundle_run PROPERTIES TIMEOUT 120 LABELS integration)
  # The layout make-bundle.sh falls back to without patchelf: wrappers in bin/ that set
  # LD_LIBRARY_PATH for their program.
  add_test(NAME bundle_run_wrappers
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/bundle.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(bundle_run_wrappers PROPERTIES TIMEOUT 120 LABELS integration
                       ENVIRONMENT MG_BUNDLE_WRAPPERS=1)
endif()
