# The CUDA backend (-DMG_CUDA=ON). Here only the parts that need no GPU: the host-side arithmetic
# (presets, weight and KV sizes, the KV pool from free memory, the decode-step limit). The
# kernels and the whole model are checked on a GPU machine by worker/cuda/run-gpu.sh
# (cuda-check: every kernel against its CPU twin; logits against the CPU backend).
if(TARGET mg_cuda_plan)
  mg_test(test_cuda_plan SOURCES unit/test_cuda_plan.c LIBS mg_cuda_plan LABELS unit)
endif()
