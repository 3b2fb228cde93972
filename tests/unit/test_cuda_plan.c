/* test_cuda_plan.c - the CUDA backend's host-side arithmetic (worker/cuda/cuda_plan.h): the
 * released shapes, the device bytes they need, the KV pool from free memory and the decode-step
 * limit, against the figures of DESIGN.md §3 and §8. */
#include "check.h"
#include "cuda_plan.h"

int main(void) {
    mg_model_config c;
    CHECK_OK(cuda_plan_preset("120b", &c));
    CHECK_EQ_INT(c.hidden, 2880);
    CHECK_EQ_INT(c.n_layers, 36);
    CHECK_EQ_INT(c.n_experts, 128);
    CHECK_EQ_INT(c.n_heads * c.head_dim, 4096);
    CHECK(c.sliding[0] && !c.sliding[1] && c.sliding[34] && !c.sliding[35]);
    CHECK_NEAR(c.rope_factor, 32.0, 0);
    CHECK(cuda_plan_preset("7b", &c) == MG_ENOTFOUND);
    CHECK(strstr(mg_err_msg(), "7b") != NULL);

    /* 120b is 60.8 GiB as stored (DESIGN.md §3); ours is the same tensors, 256-byte aligned. */
    CHECK_OK(cuda_plan_preset("120b", &c));
    double gib = (double)cuda_plan_weight_bytes(&c) / (1024.0 * 1024 * 1024);
    CHECK_MSG(gib > 60.0 && gib < 61.5, "120b weights %.2f GiB", gib);
    mg_model_config c20;
    CHECK_OK(cuda_plan_preset("20b", &c20));
    double gib20 = (double)cuda_plan_weight_bytes(&c20) / (1024.0 * 1024 * 1024);
    CHECK_MSG(gib20 > 12.0 && gib20 < 13.5, "20b weights %.2f GiB", gib20);

    /* KV: 2 KiB per token per layer in bf16 (DESIGN.md §3). */
    CHECK_EQ_INT(cuda_plan_block_bytes(&c, 16), 16 * 36 * 2048);

    int n = -1;
    CHECK_OK(cuda_plan_kv_blocks((size_t)10 << 30, 0.9, (size_t)1 << 20, &n));
    CHECK_EQ_INT(n, 9216); /* floor(10 GiB × 0.9 / 1 MiB) */
    CHECK(cuda_plan_kv_blocks((size_t)10 << 30, 0.0, 1, &n) == MG_EINVAL);
    CHECK(strstr(mg_err_msg(), "free_gpu_memory_fraction") != NULL);
    CHECK(cuda_plan_kv_blocks((size_t)10 << 30, 1.5, 1, &n) == MG_EINVAL);
    CHECK(cuda_plan_kv_blocks(1000, 0.9, 4096, &n) == MG_ENOMEM);
    CHECK_EQ_INT(n, 0);

    /* Single stream: about 5 GB read per token, 670 tok/s at 3.35 TB/s (DESIGN.md §8). */
    cuda_step_limit l1 = cuda_plan_decode_limit(&c, 1, 1024, 3.35e12, 989e12);
    CHECK_NEAR(l1.experts_touched, 4.0, 1e-9);
    CHECK_MSG(l1.bytes > 4.6e9 && l1.bytes < 5.4e9, "bytes per token %.3g", l1.bytes);
    CHECK(l1.ms == l1.ms_bytes && l1.ms_bytes > l1.ms_flops);
    CHECK_MSG(1000.0 / l1.ms > 620 && 1000.0 / l1.ms < 730, "%.0f tok/s", 1000.0 / l1.ms);
    /* 512 sequences touch nearly every expert: all 61 GB of weights cross memory each step. */
    cuda_step_limit l512 = cuda_plan_decode_limit(&c, 512, 1024, 3.35e12, 989e12);
    CHECK(l512.experts_touched > 127.0 && l512.experts_touched <= 128.0);
    CHECK(l512.bytes > 60e9);
    CHECK(l512.flops > 500.0 * l1.flops); /* flops grow with the batch, bytes barely */
    /* Sliding layers read at most their window: a longer context adds only full-layer reads. */
    cuda_step_limit a = cuda_plan_decode_limit(&c, 64, 128, 3.35e12, 989e12);
    cuda_step_limit b = cuda_plan_decode_limit(&c, 64, 256, 3.35e12, 989e12);
    double kv_per_pos_full_layers = 64.0 * 18 * 2 * 512 * 2; /* B × full layers × K,V × KV × 2B */
    CHECK_NEAR(b.bytes - a.bytes, 128 * kv_per_pos_full_layers, 1.0);
    return check_done();
}
