/* hbm_bench.cu - how long a kernel that only reads S bytes of weights takes, when L such kernels
 * run back to back in a CUDA graph, each over bytes no other one touches (so nothing is in L2):
 * the floor for a batch-1 decode kernel that streams S bytes, launch and ramp-up included.
 *
 *   cuda-hbm-bench [--sizes 29.5,23.6,35.4,17.7,1000] (MB) [--layers 36] [--reps 10]
 *                  [--pdl 0|1|2]
 *
 * --pdl 0: plain launches; 1 (the default): each kernel may launch once the one before it has
 * started everywhere, but reads only after it has finished (griddepcontrol.wait before the first
 * load, as an expert kernel whose rows the router chooses); 2: the loads go before that wait (as
 * a kernel whose rows are known ahead). Shapes: "stride C" is C CTAs an SM, each thread with 4
 * 16-byte loads in flight, the grid striding over the bytes; "tile B" is a CTA per B contiguous
 * bytes (a thread's units loaded at once, as the expert kernels' tiles), in waves. L is
 * --layers, or 4 where L sizes would pass 4 GB. Prints "RESULT hbm size_mb S shape X grid G
 * kernels L us A tb_s B" per case, A the median microseconds a kernel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "common.cuh"

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "cuda-hbm-bench: %s: %s\n", #x, cudaGetErrorString(e_));               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* The xor of every unit, written only when it matches a value no run produces: keeps the loads. */
__device__ __forceinline__ void keep(uint4 a, unsigned *sink) {
    if ((a.x ^ a.y ^ a.z ^ a.w) == 0x9e3779b9u) *sink = a.x;
}

template <int MODE>
__global__ void __launch_bounds__(256) stride_kernel(const uint4 *p, size_t n, unsigned *sink) {
    pdl_trigger();
    if (MODE == 1) pdl_wait();
    size_t step = (size_t)gridDim.x * blockDim.x, i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    uint4 a = make_uint4(0, 0, 0, 0);
    for (; i < n; i += 4 * step) {
        uint4 v[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            v[j] = i + j * step < n ? ld_stream(p + i + j * step) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int j = 0; j < 4; j++) a.x ^= v[j].x, a.y ^= v[j].y, a.z ^= v[j].z, a.w ^= v[j].w;
    }
    if (MODE == 2) pdl_wait();
    keep(a, sink);
}

/* A CTA of 256 threads per tile of 256 * U units, all loaded at once. */
template <int MODE, int U>
__global__ void __launch_bounds__(256) tile_kernel(const uint4 *p, size_t n, unsigned *sink) {
    pdl_trigger();
    if (MODE == 1) pdl_wait();
    size_t base = (size_t)blockIdx.x * 256 * U + threadIdx.x;
    uint4 v[U], a = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < U; j++)
        v[j] = base + j * 256 < n ? ld_stream(p + base + j * 256) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < U; j++) a.x ^= v[j].x, a.y ^= v[j].y, a.z ^= v[j].z, a.w ^= v[j].w;
    if (MODE == 2) pdl_wait();
    keep(a, sink);
}

typedef void (*kfn)(const uint4 *, size_t, unsigned *);

static kfn stride_k[3] = {stride_kernel<0>, stride_kernel<1>, stride_kernel<2>};
static kfn tile6_k[3] = {tile_kernel<0, 6>, tile_kernel<1, 6>, tile_kernel<2, 6>};
static kfn tile16_k[3] = {tile_kernel<0, 16>, tile_kernel<1, 16>, tile_kernel<2, 16>};

static void launch(kfn k, int grid, const uint4 *p, size_t n, unsigned *sink, int pdl,
                   cudaStream_t s) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(256);
    cfg.stream = s;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    CK(cudaLaunchKernelEx(&cfg, k, p, n, sink));
}

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *sizes = "29.5,23.6,35.4,17.7,1000";
    int layers = 36, reps = 10, pdl = 1;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 == argc) {
            fprintf(stderr, "cuda-hbm-bench: %s needs a value\n", argv[i]);
            return 2;
        } else if (!strcmp(argv[i], "--sizes"))
            sizes = argv[i + 1];
        else if (!strcmp(argv[i], "--layers"))
            layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps"))
            reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--pdl"))
            pdl = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "cuda-hbm-bench: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (layers < 1 || reps < 1 || pdl < 0 || pdl > 2) {
        fprintf(stderr, "cuda-hbm-bench: --layers and --reps must be >= 1, --pdl 0, 1 or 2\n");
        return 2;
    }
    for (const char *q = sizes; *q;) { /* every size a positive number of MB */
        char *end;
        double mb = strtod(q, &end);
        if (end == q || !(mb > 0.0) || (*end && *end != ',')) {
            fprintf(stderr, "cuda-hbm-bench: --sizes %s: not a list of positive MB at \"%s\"\n",
                    sizes, q);
            return 2;
        }
        q = *end ? end + 1 : end;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    int sms = prop.multiProcessorCount;
    printf("device %s, %d SMs, L2 %d MB, --pdl %d\n", prop.name, sms, prop.l2CacheSize >> 20, pdl);
    unsigned *sink;
    CK(cudaMalloc(&sink, sizeof(unsigned)));
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (const char *q = sizes; *q;) {
        double mb = strtod(q, (char **)&q);
        if (*q == ',') q++;
        size_t n = (size_t)(mb * 1e6) / 16; /* units */
        int L = mb * layers > 4000 ? 4 : layers;
        uint4 *buf;
        CK(cudaMalloc(&buf, n * 16 * L));
        CK(cudaMemset(buf, 1, n * 16 * L));
        struct {
            const char *name;
            kfn *k;
            int grid;
        } shapes[] = {
            {"stride 1", stride_k, sms},
            {"stride 2", stride_k, 2 * sms},
            {"stride 4", stride_k, 4 * sms},
            {"stride 8", stride_k, 8 * sms},
            {"tile 24KB", tile6_k, (int)((n + 256 * 6 - 1) / (256 * 6))},
            {"tile 64KB", tile16_k, (int)((n + 256 * 16 - 1) / (256 * 16))},
        };
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            cudaGraph_t g;
            cudaGraphExec_t ge;
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
            for (int l = 0; l < L; l++)
                launch(shapes[si].k[pdl], shapes[si].grid, buf + (size_t)l * n, n, sink, pdl, s);
            CK(cudaStreamEndCapture(s, &g));
            CK(cudaGraphInstantiate(&ge, g, 0));
            CK(cudaGraphLaunch(ge, s)); /* warm-up */
            CK(cudaStreamSynchronize(s));
            float t[64];
            int r = reps < 64 ? reps : 64;
            for (int i = 0; i < r; i++) {
                CK(cudaEventRecord(e0, s));
                CK(cudaGraphLaunch(ge, s));
                CK(cudaEventRecord(e1, s));
                CK(cudaEventSynchronize(e1));
                CK(cudaEventElapsedTime(&t[i], e0, e1));
            }
            qsort(t, r, sizeof t[0], cmp_f);
            double us = t[r / 2] * 1e3 / L;
            printf("RESULT hbm size_mb %.1f shape %s grid %d kernels %d us %.2f tb_s %.3f\n", mb,
                   shapes[si].name, shapes[si].grid, L, us, n * 16 / (us * 1e-6) / 1e12);
            CK(cudaGraphExecDestroy(ge));
            CK(cudaGraphDestroy(g));
        }
        CK(cudaFree(buf));
    }
    return 0;
}
