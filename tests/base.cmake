mg_test(test_status SOURCES unit/test_status.c LIBS mg_base LABELS unit)
mg_test(test_config SOURCES unit/test_config.c LIBS mg_base LABELS unit)
mg_test(test_blockhash SOURCES unit/test_blockhash.c LIBS mg_base LABELS unit)
