/*
 * okv_hip_emu.h - a small SIMT emulator for the HIP backend's kernels (TESTS ONLY).
 *
 * Included by okv_hip_alias.h when OKV_HIP_EMULATE is defined: the backend's .hip
 * sources then compile as plain C++ (g++/clang++) into a module that runs every
 * kernel on the CPU, so the whole backend (host glue, validation order, every
 * kernel) can be checked with the conformance suite on a machine without a GPU, at
 * a wave width of 32 or 64 (OKV_EMU_WAVE). It is never part of a product build.
 *
 * Model: the blocks of a launch run one after another; the threads of a block are
 * fibers (a 7-instruction x86-64 stack switch: x86-64 Linux only). __syncthreads() waits for every live thread of the
 * block; a wave collective (shuffle, ballot count, any) waits for the lanes of the wave and aborts with a message if
 * some lanes of that wave have exited (divergent collective: on hardware its result would be undefined). __shared__
 * becomes a static local (one copy per kernel, shared by the block that runs). Device memory is host memory filled with
 * a 0xA5 pattern on allocation. No MFMA (OKV_HAVE_MFMA = 0).
 */
#ifndef OKV_HIP_EMU_H
#define OKV_HIP_EMU_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <functional>

#ifndef OKV_EMU_WAVE
#define OKV_EMU_WAVE 64
#endif
#define OKV_WAVE OKV_EMU_WAVE
#define OKV_HAVE_MFMA 0
#define OKV_HIP_VENDOR_EMU 1
#define OKV_DEVICE_VENDOR "CPU emulator"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

namespace okv_emu
{
enum { RUN = 0, BLOCK_BAR = 1, WAVE_BAR = 2, DONE = 3 };
constexpr size_t STACK = 256 * 1024;
constexpr int MAX_THREADS = 1024;

struct Fiber {
    void *sp;
    int state;
};
struct Ctx {
    dim3 grid, block, bidx;
    int n, cur;
    Fiber f[MAX_THREADS];
    void *main_sp;
    const std::function<void()> *body;
    float fx[MAX_THREADS];
    int ix[MAX_THREADS];
    char *stacks;
};
inline Ctx &G()
{
    static Ctx *g = nullptr;
    if (!g) {
        g = (Ctx *)calloc(1, sizeof(Ctx));
        if (!g) abort();
        g->stacks = (char *)malloc(STACK * MAX_THREADS);
        if (!g->stacks) abort();
    }
    return *g;
}
} // namespace okv_emu

/* okv_emu_switch(save, to): push the callee-saved registers, store rsp in *save,
 * load rsp = to, pop the registers of the other side and return into it. */
extern "C" void okv_emu_switch(void **save_sp, void *new_sp);
__asm__(".text\n"
        ".globl okv_emu_switch\n"
        ".type okv_emu_switch,@function\n"
        ".weak okv_emu_switch\n"
        "okv_emu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size okv_emu_switch, .-okv_emu_switch\n");

namespace okv_emu
{
inline dim3 tidx()
{
    const Ctx &g = G();
    const unsigned t = (unsigned)g.cur;
    return dim3(t % g.block.x, (t / g.block.x) % g.block.y, t / (g.block.x * g.block.y));
}
inline void yield_as(int state)
{
    Ctx &g = G();
    g.f[g.cur].state = state;
    okv_emu_switch(&g.f[g.cur].sp, g.main_sp);
}
inline void entry()
{
    Ctx &g = G();
    (*g.body)();
    g.f[g.cur].state = DONE;
    okv_emu_switch(&g.f[g.cur].sp, g.main_sp); /* never resumed */
    abort();
}
inline void run_block()
{
    Ctx &g = G();
    for (int t = 0; t < g.n; ++t) {
        /* top 16-aligned; after the 6 pops and the ret into entry(), rsp = top - 8 (ABI) */
        char *top = g.stacks + (size_t)(t + 1) * STACK;
        void **sp = (void **)(top - 64);
        for (int i = 0; i < 6; ++i)
            sp[i] = nullptr;
        sp[6] = (void *)&entry;
        sp[7] = nullptr;
        g.f[t].sp = sp;
        g.f[t].state = RUN;
    }
    const int W = OKV_EMU_WAVE;
    for (;;) {
        for (int t = 0; t < g.n; ++t)
            if (g.f[t].state == RUN) {
                g.cur = t;
                okv_emu_switch(&g.main_sp, g.f[t].sp);
            }
        int alive = 0, at_block = 0;
        for (int t = 0; t < g.n; ++t) {
            alive += g.f[t].state != DONE;
            at_block += g.f[t].state == BLOCK_BAR;
        }
        if (!alive) return;
        int released = 0;
        for (int w0 = 0; w0 < g.n; w0 += W) {
            int waiting = 0, done = 0, lanes = 0;
            for (int t = w0; t < w0 + W && t < g.n; ++t) {
                ++lanes;
                waiting += g.f[t].state == WAVE_BAR;
                done += g.f[t].state == DONE;
            }
            if (waiting && waiting + done == lanes) {
                if (done) {
                    fprintf(stderr,
                            "okv_hip_emu: divergent wave collective (block %u,%u,%u, wave at thread %d: %d "
                            "lanes exited)\n",
                            g.bidx.x, g.bidx.y, g.bidx.z, w0, done);
                    abort();
                }
                for (int t = w0; t < w0 + W && t < g.n; ++t)
                    g.f[t].state = RUN;
                released = 1;
            }
        }
        if (at_block && at_block == alive) {
            for (int t = 0; t < g.n; ++t)
                if (g.f[t].state == BLOCK_BAR) g.f[t].state = RUN;
            released = 1;
        }
        if (!released) {
            int running = 0;
            for (int t = 0; t < g.n; ++t)
                running += g.f[t].state == RUN;
            if (!running) {
                fprintf(stderr, "okv_hip_emu: deadlock in block %u,%u,%u\n", g.bidx.x, g.bidx.y, g.bidx.z);
                abort();
            }
        }
    }
}
inline void launch(dim3 grid, dim3 block, const std::function<void()> &body)
{
    Ctx &g = G();
    const unsigned n = block.x * block.y * block.z;
    if (n == 0 || n > (unsigned)MAX_THREADS || (block.y == 1 && block.z == 1 && n % OKV_EMU_WAVE && n > 32)) {
        fprintf(stderr, "okv_hip_emu: bad block size %u\n", n);
        abort();
    }
    g.grid = grid;
    g.block = block;
    g.n = (int)n;
    g.body = &body;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                g.bidx = dim3(x, y, z);
                run_block();
            }
}
inline float shfl_idx(float v, int src_lane)
{
    Ctx &g = G();
    const int t = g.cur, w0 = t - t % OKV_EMU_WAVE;
    g.fx[t] = v;
    yield_as(WAVE_BAR);
    const float r = g.fx[w0 + (src_lane % OKV_EMU_WAVE)];
    yield_as(WAVE_BAR);
    return r;
}
inline int wave_count(bool p)
{
    Ctx &g = G();
    const int t = g.cur, w0 = t - t % OKV_EMU_WAVE;
    g.ix[t] = p ? 1 : 0;
    yield_as(WAVE_BAR);
    int c = 0;
    for (int i = w0; i < w0 + OKV_EMU_WAVE; ++i)
        c += g.ix[i];
    yield_as(WAVE_BAR);
    return c;
}
} // namespace okv_emu

#define threadIdx (okv_emu::tidx())
#define blockIdx (okv_emu::G().bidx)
#define blockDim (okv_emu::G().block)
#define gridDim (okv_emu::G().grid)
inline void __syncthreads() { okv_emu::yield_as(okv_emu::BLOCK_BAR); }
inline int atomicOr(int *p, int v)
{
    const int old = *p;
    *p = old | v;
    return old;
}
inline float okv_shfl_xor(float v, int m) { return okv_emu::shfl_idx(v, (int)(okv_emu::G().cur % OKV_EMU_WAVE) ^ m); }
inline float __shfl(float v, int src) { return okv_emu::shfl_idx(v, src); }
inline int okv_wave_count(bool p) { return okv_emu::wave_count(p); }
inline bool okv_wave_any(bool p) { return okv_emu::wave_count(p) > 0; }

#undef OKVH_LAUNCH
#define OKVH_LAUNCH(kernel, grid, block, stream, ...)                                                                  \
    ((void)(stream), okv_emu::launch(dim3(grid), dim3(block), [&]() { kernel(__VA_ARGS__); }))

/* ---- the runtime calls the backend uses, on host memory ---- */
typedef int hipError_t;
typedef void *hipStream_t;
enum { hipSuccess = 0, hipErrorOutOfMemory = 2, hipErrorNoDevice = 100 };
enum { hipMemcpyHostToDevice = 1, hipMemcpyDeviceToHost = 2 };
#define hipStreamNonBlocking 1
struct hipDeviceProp_t {
    char name[256];
    char gcnArchName[256];
    int warpSize, multiProcessorCount, major, minor;
    size_t totalGlobalMem;
};
inline hipError_t hipGetDeviceCount(int *n)
{
    *n = 1;
    return hipSuccess;
}
inline hipError_t hipSetDevice(int) { return hipSuccess; }
inline hipError_t hipGetDeviceProperties(hipDeviceProp_t *p, int)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "SIMT emulator (wave %d)", OKV_EMU_WAVE);
    snprintf(p->gcnArchName, sizeof p->gcnArchName, "emu-wave%d", OKV_EMU_WAVE);
    p->warpSize = OKV_EMU_WAVE;
    p->multiProcessorCount = 4;
    p->totalGlobalMem = (size_t)1 << 30;
    return hipSuccess;
}
inline hipError_t hipDriverGetVersion(int *v)
{
    *v = 0;
    return hipSuccess;
}
inline hipError_t hipRuntimeGetVersion(int *v)
{
    *v = 0;
    return hipSuccess;
}
inline hipError_t hipGetLastError() { return hipSuccess; }
inline const char *hipGetErrorString(hipError_t e) { return e == hipSuccess ? "no error" : "emulator error"; }
inline const char *hipGetErrorName(hipError_t e) { return e == hipSuccess ? "hipSuccess" : "hipErrorEmulator"; }
inline hipError_t hipMalloc(void **p, size_t n)
{
    *p = malloc(n ? n : 1);
    if (!*p) return hipErrorOutOfMemory;
    memset(*p, 0xA5, n);
    return hipSuccess;
}
inline hipError_t hipFree(void *p)
{
    free(p);
    return hipSuccess;
}
inline hipError_t hipMemcpyAsync(void *d, const void *s, size_t n, int, hipStream_t)
{
    if (n) memcpy(d, s, n);
    return hipSuccess;
}
inline hipError_t hipMemsetAsync(void *d, int v, size_t n, hipStream_t)
{
    if (n) memset(d, v, n);
    return hipSuccess;
}
inline hipError_t hipStreamCreateWithFlags(hipStream_t *s, unsigned)
{
    *s = (hipStream_t)(size_t)1;
    return hipSuccess;
}
inline hipError_t hipStreamDestroy(hipStream_t) { return hipSuccess; }
inline hipError_t hipStreamSynchronize(hipStream_t) { return hipSuccess; }

#endif /* OKV_HIP_EMU_H */
