/* The corpus's whole OpenCL C environment: built with -cl-no-stdinc -nogpulib, so nothing here comes from
 * clang's opencl-c.h or the ROCm device libraries. Every work-item query reads clang's amdgcn builtins and the
 * code object v5 hidden kernel arguments (AMDGPUUsage "Code Object V5 Metadata"; offsets from the start of
 * the hidden block, which __builtin_amdgcn_implicitarg_ptr points at):
 *   0/4/8    u32 hidden_block_count_x/y/z   full workgroups only
 *   12/14/16 u16 hidden_group_size_x/y/z    the dispatch's workgroup size
 *   18/20/22 u16 hidden_remainder_x/y/z     size of the partial last workgroup, 0 if none
 *   64       u16 hidden_grid_dims           dimensions of the dispatch
 * The global offset is not used: get_global_id starts at 0 in every dimension.
 */
#ifndef KFDTRACE_PRELUDE_H
#define KFDTRACE_PRELUDE_H

#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
#pragma OPENCL EXTENSION cl_khr_int64_base_atomics : enable
#pragma OPENCL EXTENSION cl_khr_int64_extended_atomics : enable

#define OVL __attribute__((overloadable))
#define INLINE static inline __attribute__((always_inline))

typedef __SIZE_TYPE__ size_t;
typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef unsigned long ulong;
typedef uchar uchar4 __attribute__((ext_vector_type(4)));
typedef int int2 __attribute__((ext_vector_type(2)));
typedef int int4 __attribute__((ext_vector_type(4)));
typedef uint uint4 __attribute__((ext_vector_type(4)));
typedef float float2 __attribute__((ext_vector_type(2)));
typedef float float4 __attribute__((ext_vector_type(4)));

#define NULL ((void *)0)
#define CLK_LOCAL_MEM_FENCE 1
#define CLK_GLOBAL_MEM_FENCE 2

/* ---- work-item functions, barriers and lanes ----------------------------------------------------------- */
#ifdef __AMDGCN__
INLINE __constant char *hidden_args(void) { return (__constant char *)__builtin_amdgcn_implicitarg_ptr(); }
INLINE uint hidden_u32(uint offset) { return *(__constant uint *)(hidden_args() + offset); }
INLINE uint hidden_u16(uint offset) { return *(__constant ushort *)(hidden_args() + offset); }

INLINE size_t get_local_id(uint d) {
    return d == 0 ? __builtin_amdgcn_workitem_id_x() : d == 1 ? __builtin_amdgcn_workitem_id_y()
         : d == 2 ? __builtin_amdgcn_workitem_id_z() : 0;
}
INLINE size_t get_group_id(uint d) {
    return d == 0 ? __builtin_amdgcn_workgroup_id_x() : d == 1 ? __builtin_amdgcn_workgroup_id_y()
         : d == 2 ? __builtin_amdgcn_workgroup_id_z() : 0;
}
INLINE uint get_work_dim(void) { return hidden_u16(64); }
INLINE size_t get_enqueued_local_size(uint d) { return d < 3 ? hidden_u16(12 + 2 * d) : 1; }
INLINE size_t get_local_size(uint d) {  /* the partial last workgroup has the remainder's size */
    if (d >= 3) return 1;
    return get_group_id(d) < hidden_u32(4 * d) ? hidden_u16(12 + 2 * d) : hidden_u16(18 + 2 * d);
}
INLINE size_t get_num_groups(uint d) { return d < 3 ? hidden_u32(4 * d) + (hidden_u16(18 + 2 * d) != 0) : 1; }
INLINE size_t get_global_size(uint d) {
    return d < 3 ? (size_t)hidden_u32(4 * d) * hidden_u16(12 + 2 * d) + hidden_u16(18 + 2 * d) : 1;
}

INLINE void mem_fence(uint flags) { __builtin_amdgcn_fence(__ATOMIC_SEQ_CST, "workgroup"); }
INLINE void barrier(uint flags) {
    __builtin_amdgcn_fence(__ATOMIC_RELEASE, "workgroup");
    __builtin_amdgcn_s_barrier();
    __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "workgroup");
}

/* the work-item's lane in its wave, the wave's size, and the value `v` of the lane byte_index / 4 */
INLINE uint wave_size(void) { return __builtin_amdgcn_wavefrontsize(); }
INLINE uint lane_id(void) {
    uint lane = __builtin_amdgcn_mbcnt_lo(~0u, 0u);
    return wave_size() == 64 ? __builtin_amdgcn_mbcnt_hi(~0u, lane) : lane;
}
INLINE int bpermute(int byte_index, int v) { return __builtin_amdgcn_ds_bpermute(byte_index, v); }
/* v of the lane a DPP row pattern names (row_shr:n 0x11n, row_share:n 0x15n; 0 where the row has none) */
#define DPP_ROW(v, ctrl) __builtin_amdgcn_update_dpp(0u, (v), (ctrl), 0xf, 0xf, true)
#else
/* host build (driver/kernels/host.py cross-checks the references): the harness runs every work-item of a
 * workgroup on a thread of its own and answers these; waves are 32 lanes */
uint kh_local_id(uint d);
uint kh_group_id(uint d);
uint kh_work_dim(void);
uint kh_enqueued_local_size(uint d);
uint kh_local_size(uint d);
uint kh_num_groups(uint d);
uint kh_global_size(uint d);
void kh_barrier(void);
uint kh_lane(void);
int kh_bpermute(int byte_index, int v);
INLINE size_t get_local_id(uint d) { return kh_local_id(d); }
INLINE size_t get_group_id(uint d) { return kh_group_id(d); }
INLINE uint get_work_dim(void) { return kh_work_dim(); }
INLINE size_t get_enqueued_local_size(uint d) { return kh_enqueued_local_size(d); }
INLINE size_t get_local_size(uint d) { return kh_local_size(d); }
INLINE size_t get_num_groups(uint d) { return kh_num_groups(d); }
INLINE size_t get_global_size(uint d) { return kh_global_size(d); }
INLINE void mem_fence(uint flags) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
INLINE void barrier(uint flags) { kh_barrier(); }
INLINE uint wave_size(void) { return 32; }
INLINE uint lane_id(void) { return kh_lane(); }
INLINE int bpermute(int byte_index, int v) { return kh_bpermute(byte_index, v); }
uint kh_dpp_row(uint v, uint ctrl);
#define DPP_ROW(v, ctrl) kh_dpp_row((v), (ctrl))
#endif
INLINE size_t get_global_id(uint d) { return get_group_id(d) * get_enqueued_local_size(d) + get_local_id(d); }

/* ---- math ---------------------------------------------------------------------------------------------- */
INLINE OVL float sqrt(float x) { return __builtin_sqrtf(x); }
INLINE OVL double sqrt(double x) { return __builtin_sqrt(x); }
INLINE OVL float exp(float x) { return __builtin_expf(x); }
INLINE OVL float fabs(float x) { return __builtin_fabsf(x); }
INLINE OVL double fabs(double x) { return __builtin_fabs(x); }
INLINE OVL float fma(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
INLINE OVL double fma(double a, double b, double c) { return __builtin_fma(a, b, c); }
INLINE OVL float fmin(float a, float b) { return __builtin_fminf(a, b); }
INLINE OVL float fmax(float a, float b) { return __builtin_fmaxf(a, b); }
INLINE OVL int min(int a, int b) { return a < b ? a : b; }
INLINE OVL int max(int a, int b) { return a > b ? a : b; }
INLINE OVL uint min(uint a, uint b) { return a < b ? a : b; }
INLINE OVL uint max(uint a, uint b) { return a > b ? a : b; }
INLINE uint popcount(uint x) { return __builtin_popcount(x); }
INLINE uint clz(uint x) { return x ? __builtin_clz(x) : 32; }
INLINE uint rotate(uint x, uint n) { return __builtin_rotateleft32(x, n); }

/* ---- atomics (OpenCL 1.x style: return the old value) ---------------------------------------------------
 * Generic pointers (OpenCL 2.0), so one definition serves __global and __local; after inlining the compiler
 * gives global_* or ds_* instructions. The atomic operations themselves are not volatile: the compiler infers
 * no address space for volatile atomics (they stay flat_*) and its atomic optimizer leaves them alone. atomic_inc/atomic_dec are OpenCL's (+1/-1). atomic_inc_wrap/_dec_wrap
 * are the hardware's wrapping inc/dec (CUDA atomicInc/atomicDec): inc stores old >= limit ? 0 : old + 1,
 * dec stores (old == 0 || old > limit) ? limit : old - 1. */
#define SCOPE __OPENCL_MEMORY_SCOPE_DEVICE
#define ATOMIC_RMW(name, op, T, AT) \
    INLINE OVL T atomic_##name(volatile T *p, T v) { \
        return __opencl_atomic_fetch_##op((AT *)p, v, __ATOMIC_RELAXED, SCOPE); }
#define ATOMICS(T, AT) \
    ATOMIC_RMW(add, add, T, AT) ATOMIC_RMW(sub, sub, T, AT) ATOMIC_RMW(min, min, T, AT) \
    ATOMIC_RMW(max, max, T, AT) ATOMIC_RMW(and, and, T, AT) ATOMIC_RMW(or, or, T, AT) \
    ATOMIC_RMW(xor, xor, T, AT) \
    INLINE OVL T atomic_xchg(volatile T *p, T v) { \
        return __opencl_atomic_exchange((AT *)p, v, __ATOMIC_RELAXED, SCOPE); } \
    INLINE OVL T atomic_cmpxchg(volatile T *p, T cmp, T v) { \
        __opencl_atomic_compare_exchange_strong((AT *)p, &cmp, v, __ATOMIC_RELAXED, __ATOMIC_RELAXED, \
                                                SCOPE); \
        return cmp; } \
    INLINE OVL T atomic_inc(volatile T *p) { return atomic_add(p, (T)1); } \
    INLINE OVL T atomic_dec(volatile T *p) { return atomic_sub(p, (T)1); }
ATOMICS(int, atomic_int)
ATOMICS(uint, atomic_uint)
ATOMICS(long, atomic_long)
ATOMICS(ulong, atomic_ulong)

#ifdef __AMDGCN__
INLINE uint atomic_inc_wrap(volatile uint *p, uint limit) {
    return __builtin_amdgcn_atomic_inc32((uint *)p, limit, __ATOMIC_RELAXED, "agent");
}
INLINE uint atomic_dec_wrap(volatile uint *p, uint limit) {
    return __builtin_amdgcn_atomic_dec32((uint *)p, limit, __ATOMIC_RELAXED, "agent");
}
/* x - floor(x), never 1: the hardware's v_fract_f32 (the largest float below 1 where the difference rounds up) */
INLINE float fract_below_one(float x) { return __builtin_amdgcn_fractf(x); }
#else
INLINE uint atomic_inc_wrap(volatile uint *p, uint limit) {
    uint old = *p, seen;
    do old = atomic_cmpxchg(p, seen = old, old >= limit ? 0 : old + 1); while (old != seen);
    return old;
}
INLINE uint atomic_dec_wrap(volatile uint *p, uint limit) {
    uint old = *p, seen;
    do old = atomic_cmpxchg(p, seen = old, old == 0 || old > limit ? limit : old - 1); while (old != seen);
    return old;
}
INLINE float fract_below_one(float x) { return x != x ? x : __builtin_fminf(x - __builtin_floorf(x), 0x1.fffffep-1f); }
#endif

#endif
