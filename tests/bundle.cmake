# The relocatable bundle (deploy/bundle/make-bundle.sh): made from this build, moved, and run
# with the system's copies of its libraries hidden (tests/integration/bundle.sh). It starts its
# own nats-server and etcd from the bundle, so it needs no servers from tests/run.sh.
if(MG_SERVING AND TARGET magneto-worker AND TARGET magneto-frontend AND TARGET magneto-bench)
  add_test(NAME bundle_run
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/bundle.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(bundle_run PROPERTIES TIMEOUT 120 LABELS integration)
endif()
