# Tokenizer and harmony tests (runtime/tok). They read the o200k ranks that tests/setup-node.sh
# installs (gpt-tokenizer's data/o200k_base.tiktoken; MAGNETO_TOK_RANKS overrides) and a corpus
# that tools/tok/mkcorpus.py builds at build time, compared with tiktoken's golden ids.
if(TARGET mg_tok)
  find_program(MG_PYTHON3 python3)
  set(MG_TOK_CORPUS ${CMAKE_BINARY_DIR}/tok_corpus.bin)
  if(MG_PYTHON3)
    add_custom_command(OUTPUT ${MG_TOK_CORPUS}
      COMMAND ${MG_PYTHON3} ${PROJECT_SOURCE_DIR}/tools/tok/mkcorpus.py ${MG_TOK_CORPUS}
      DEPENDS ${PROJECT_SOURCE_DIR}/tools/tok/mkcorpus.py VERBATIM)
    add_custom_target(tok_corpus ALL DEPENDS ${MG_TOK_CORPUS})
  endif()
  foreach(t test_tok test_tok_golden test_harmony)
    mg_test(${t} SOURCES unit/${t}.c LIBS mg_tok LABELS unit)
    target_compile_definitions(${t} PRIVATE MG_TOK_RANKS="${MG_TOK_RANKS}"
      MG_TOK_GOLDEN_DIR="${PROJECT_SOURCE_DIR}/tests/golden/tok" MG_TOK_CORPUS="${MG_TOK_CORPUS}")
  endforeach()
  if(TARGET tok_corpus)
    add_dependencies(test_tok_golden tok_corpus)
  endif()
endif()
