# The CUDA backend (-DMG_CUDA=ON). Here only the parts that need no GPU: the host-side arithmetic
# (presets, weight and KV sizes, the KV pool from free memory, the decode-step limit). The
# kernels and the whole model are checked on a GPU machine by worker/cuda/run-gpu.sh
# (cuda-check: every kernel against its CPU twin; logits against the CPU backend).
if(TARGET mg_cuda_plan)
  mg_test(test_cuda_plan SOURCES unit/test_cuda_plan.c LIBS mg_cuda_plan LABELS unit)
endif()
# The one-token switches' options (cuda_small_option) before any GPU is touched: a value that is
# not a mask of the switch's bits is refused with the bits it takes; good masks are taken, so
# that the run goes on to the next error (an unknown preset).
if(TARGET cuda-bench AND TARGET cuda-check)
  add_test(NAME cuda_bench_switch_refused COMMAND cuda-bench --rows 2)
  add_test(NAME cuda_check_switch_refused COMMAND cuda-check --trigger 4)
  add_test(NAME cuda_bench_switch_taken
           COMMAND cuda-bench --bulk 63 --trigger 51 --rows 21 --persist 18 --no-math 3
                   --preset nosuch)
  set_tests_properties(cuda_bench_switch_refused PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION
    "cuda-bench: --rows 2: a mask of 1 \\(gate_up's token row through L1\\), 4 [^\n]* and 16 \\(down 8 rows a CTA\\)")
  set_tests_properties(cuda_check_switch_refused PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION
    "cuda-check: --trigger 4: a mask of 1 \\(o_proj")
  set_tests_properties(cuda_bench_switch_taken PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION
    "cuda-bench: preset nosuch: unknown")
endif()
# cuda-agree's own logic on a machine without a GPU: a second CPU backend as backend B (--b cpu)
# on the tiny checkpoint. Two float32 CPU backends must agree on every greedy token and on HF's
# golden; with a fault injected into B's logits (--perturb: B's top logit lowered at the 4th
# greedy token) the divergence check and the logits check must each report FAIL on their own.
if(TARGET cuda-agree AND TARGET mg-mkckpt)
  set(agree_ckpt ${CMAKE_BINARY_DIR}/ckpt/cuda_agree)
  add_test(NAME cuda_agree_ckpt
           COMMAND ${CMAKE_COMMAND} -E env --unset=MAGNETO_SEED --unset=MAGNETO_SHARD_MB
                   $<TARGET_FILE:mg-mkckpt> --preset tiny --out ${agree_ckpt})
  set_tests_properties(cuda_agree_ckpt PROPERTIES FIXTURES_SETUP cuda_agree_ckpt LABELS unit)
  add_test(NAME cuda_agree_cpu
           COMMAND cuda-agree --b cpu --model ${agree_ckpt} --tokens 128 --prompts 4)
  add_test(NAME cuda_agree_cpu_golden
           COMMAND cuda-agree --b cpu --model ${agree_ckpt} --prompts 0
                   --golden ${CMAKE_CURRENT_LIST_DIR}/golden/model/tiny.golden)
  add_test(NAME cuda_agree_divergence_fails
           COMMAND cuda-agree --b cpu --model ${agree_ckpt} --tokens 16 --prompts 2 --perturb 3
                   --bound 0 --tol 1)
  add_test(NAME cuda_agree_error_fails
           COMMAND cuda-agree --b cpu --model ${agree_ckpt} --tokens 16 --prompts 2 --perturb 3
                   --bound 1 --tol 0.2)
  set_tests_properties(cuda_agree_cpu cuda_agree_cpu_golden cuda_agree_divergence_fails
                       cuda_agree_error_fails
                       PROPERTIES FIXTURES_REQUIRED cuda_agree_ckpt LABELS unit TIMEOUT 300)
  # a pass pattern overrides the exit status, so a sanitizer report must fail the test itself
  set_tests_properties(cuda_agree_cpu cuda_agree_cpu_golden cuda_agree_divergence_fails
                       cuda_agree_error_fails PROPERTIES FAIL_REGULAR_EXPRESSION
                       "AddressSanitizer|LeakSanitizer|runtime error")
  set_tests_properties(cuda_agree_cpu PROPERTIES PASS_REGULAR_EXPRESSION
    "prompt: 512 of 512 greedy tokens agree.*cuda-agree: 4 passed, 0 failed")
  set_tests_properties(cuda_agree_cpu_golden PROPERTIES PASS_REGULAR_EXPRESSION
    "golden greedy run: 512 of 512 greedy tokens agree.*cuda-agree: 11 passed, 0 failed")
  # the summary line must come (no crash), with every prompt failing for the expected reason
  set_tests_properties(cuda_agree_divergence_fails PROPERTIES PASS_REGULAR_EXPRESSION
    "FAIL prompt 0 [^\n]*diverged at token 3: cpu top-2 gap [^\n]* >= bound 0e\\+00.*FAIL prompt 1 [^\n]*diverged at token 3.*cuda-agree: 0 passed, 2 failed")
  set_tests_properties(cuda_agree_error_fails PROPERTIES PASS_REGULAR_EXPRESSION
    "FAIL prompt 0 [^\n]*< bound 1e\\+00[^\n]*max 5.00e-01 \\(tol 2e-01\\).*cuda-agree: 0 passed, 2 failed")
  # the bf16-rounding reference as backend B (cuda_ref.c): without the rounding (ref32) it is
  # the CPU backend's arithmetic step for step, so every token and every logit must agree
  add_test(NAME cuda_agree_ref32
           COMMAND cuda-agree --b ref32 --model ${agree_ckpt} --tokens 24 --prompts 2)
  set_tests_properties(cuda_agree_ref32 PROPERTIES FIXTURES_REQUIRED cuda_agree_ckpt LABELS unit
    TIMEOUT 300 FAIL_REGULAR_EXPRESSION "AddressSanitizer|LeakSanitizer|runtime error"
    PASS_REGULAR_EXPRESSION
    "prompt: 48 of 48 greedy tokens agree[^\n]*median 0.00e\\+00, max 0.00e\\+00.*cuda-agree: 2 passed, 0 failed")
endif()
# The HF-greedy verdict: a copy of tiny.golden whose greedy run from prompt 1 has its 11th token
# changed, so both backends leave HF's continuation there. With HF's recorded margin at that step
# a near-tie (1e-4) that is allowed; with a clear margin (5e-2) it must fail.
if(TARGET cuda-agree AND TARGET mg-mkckpt AND EXISTS ${CMAKE_CURRENT_LIST_DIR}/golden/model/tiny.golden)
  file(STRINGS ${CMAKE_CURRENT_LIST_DIR}/golden/model/tiny.golden agree_lines)
  foreach(kind tie clear)
    set(out "")
    foreach(line IN LISTS agree_lines)
      if(line MATCHES "^greedy ([0-9]+) ([0-9]+) ")
        set(gi ${CMAKE_MATCH_1})
        set(n ${CMAKE_MATCH_2})
        string(REPLACE " " ";" f "${line}")
        set(margins "")
        math(EXPR last "${n} - 1")
        foreach(i RANGE ${last})
          set(m 0.05)
          if(gi EQUAL 1 AND i EQUAL 10 AND kind STREQUAL "tie")
            set(m 1e-4)
          endif()
          string(APPEND margins " ${m}")
        endforeach()
        if(gi EQUAL 1)
          list(GET f 14 tok) # field 4 + 10: the 11th greedy token
          math(EXPR tok "(${tok} + 1) % 201088")
          list(REMOVE_AT f 14)
          list(INSERT f 14 ${tok})
          string(REPLACE ";" " " line "${f}")
        endif()
        string(APPEND out "${line}\nmargins ${gi} ${n}${margins}\n")
      elseif(line MATCHES "^margins ")
        # the golden's own margins (hf_golden.py writes them): replaced by the ones above
      else()
        string(APPEND out "${line}\n")
      endif()
    endforeach()
    file(WRITE ${CMAKE_BINARY_DIR}/ckpt/cuda_agree_${kind}.golden "${out}")
    add_test(NAME cuda_agree_hf_greedy_${kind}
             COMMAND cuda-agree --b cpu --model ${agree_ckpt} --prompts 0
                     --golden ${CMAKE_BINARY_DIR}/ckpt/cuda_agree_${kind}.golden)
    set_tests_properties(cuda_agree_hf_greedy_${kind} PROPERTIES
      FIXTURES_REQUIRED cuda_agree_ckpt LABELS unit TIMEOUT 300
      FAIL_REGULAR_EXPRESSION "AddressSanitizer|LeakSanitizer|runtime error")
  endforeach()
  set_tests_properties(cuda_agree_hf_greedy_tie PROPERTIES PASS_REGULAR_EXPRESSION
    "PASS golden greedy prompt 1: cpu = HF on 10 of 256 tokens; HF's top-2 gap at the divergence 1.00e-04 < .*cuda-agree: 11 passed, 0 failed")
  set_tests_properties(cuda_agree_hf_greedy_clear PROPERTIES PASS_REGULAR_EXPRESSION
    "FAIL golden greedy prompt 1: cpu = HF on 10 of 256 tokens; HF's top-2 gap at the divergence 5.00e-02 >= .*cuda-agree: 9 passed, 2 failed")
endif()
