/* Kernels written after the interpreter, to try it on code it was not built around: a row softmax (exp, LDS
 * reductions, division), 64-bit integer division, narrow integer types, half-precision math and float rounding. */
#include "prelude.h"
#pragma OPENCL EXTENSION cl_khr_fp16 : enable

/* Softmax of each row of x (rows x cols): one 64-wide workgroup a row; the row's max and sum by LDS trees. */
__kernel __attribute__((reqd_work_group_size(64, 1, 1)))
void softmax_rows(__global const float *x, __global float *y, uint cols) {
    uint r = get_group_id(0), t = get_local_id(0);
    __local float red[64];
    float m = -__builtin_inff();
    for (uint c = t; c < cols; c += 64) m = fmax(m, x[r * cols + c]);
    red[t] = m;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = 32; s > 0; s >>= 1) {
        if (t < s) red[t] = fmax(red[t], red[t + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    m = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    float sum = 0.0f;
    for (uint c = t; c < cols; c += 64) sum += exp(x[r * cols + c] - m);
    red[t] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = 32; s > 0; s >>= 1) {
        if (t < s) red[t] += red[t + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    sum = red[0];
    for (uint c = t; c < cols; c += 64) y[r * cols + c] = exp(x[r * cols + c] - m) / sum;
}

/* 64-bit division: unsigned quotient plus remainder, and a signed quotient of a possibly negative numerator. */
__kernel void div_mod_u64(__global const ulong *a, __global const ulong *b, __global ulong *q, __global long *s,
                          uint n) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    q[i] = a[i] / b[i] + a[i] % b[i];
    s[i] = ((long)a[i] - (long)(b[i] << 3)) / (long)(b[i] | 1);
}

/* short and uchar operands widened, shifted, multiplied, counted and rotated. */
__kernel void narrow_ints(__global const short *a, __global const uchar *b, __global int *out, uint n) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    short v = a[i];
    uchar c = b[i];
    out[i] = (int)(v >> 3) * (int)c + (v < 0 ? -c : c) + popcount((uint)v) + clz((uint)c + 1) + rotate((uint)v, 7u);
}

/* Half-precision arithmetic. */
__kernel void half_math(__global const half *a, __global const half *b, __global half *o, uint n) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    half x = a[i], y = b[i];
    o[i] = x * y + (x - y) * (half)0.5f;
}

/* Rounding to integral values, sign transfer, clamping, and a float-to-int conversion. */
__kernel void float_rounding(__global const float *a, __global float *o, __global int *oi, uint n) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    float v = a[i];
    o[i] = fmin(fabs(v), 3.0f) * __builtin_copysignf(1.0f, v) + __builtin_floorf(v) - __builtin_ceilf(v * 0.5f) +
           __builtin_rintf(v * 3.0f);
    int k = (int)(v * 100.0f);
    oi[i] = (k < 0 ? -k : k) ^ (int)i;
}

/* Math on by-value arguments alone is uniform: the compiler keeps it in scalar registers (on gfx12 with its scalar
   float instructions, s_fmaak_f32, s_trunc_f32, s_cmp_lt_f32 ..., and v_s_sqrt_f32, v_s_rcp_f32 for a square root
   and a 64-bit division), and takes bit fields with s_bfe_i32/u64/i64. */
__kernel void uniform_math(__global float *o, __global uint *oi, __global ulong *ol, float a, float b, uint bits,
                           ulong wide) {
    size_t i = get_global_id(0);
    float s = a * b + 1.5f;
    float t = __builtin_truncf(s) + __builtin_floorf(a) + __builtin_ceilf(b) + __builtin_rintf(a * 3.0f);
    float m = fmin(a, b) + fmax(a, s);
    o[i] = ((a < b ? t : m) + (b < a ? t : m) * 2.0f + __builtin_sqrtf(a * a * 4.0f)) * (float)(i + 1);
    oi[i] = (uint)(((int)(bits << 3)) >> 27) + (bits >> 9 & 0x3FF) + (uint)i;
    ol[i] = (ulong)(((long)(wide << 5)) >> 40) ^ ((wide >> 7) & 0xFFFFFFFFFFul) ^ (wide / ((ulong)bits | 1)) ^ (ulong)i;
}

/* Floating point at its edges: fused multiply-adds rounded once (a double's division and square root are built from
   them), IEEE divisions of the largest and smallest operands (v_div_scale, v_div_fmas), the clamp output modifier
   given a NaN (fmin(fmax(x, 0), 1) compiles to it), and fract just below an integer. */
__kernel void float_edges(__global const double *d, __global double *dfma, __global double *dq, __global double *droot,
                          __global const float *f, __global float *ffma, __global float *fq, __global float *fclamp,
                          __global float *ffract) {
    size_t i = get_global_id(0);
    dfma[i] = __builtin_fma(d[3 * i], d[3 * i + 1], d[3 * i + 2]);
    dq[i] = d[3 * i] / d[3 * i + 1];
    droot[i] = __builtin_sqrt(d[3 * i + 2]);
    ffma[i] = __builtin_fmaf(f[3 * i], f[3 * i + 1], f[3 * i + 2]);
    fq[i] = f[3 * i] / f[3 * i + 1];
    fclamp[i] = fmin(fmax(f[3 * i + 2], 0.0f), 1.0f);
    ffract[i] = fract_below_one(f[3 * i + 2]);
}

/* Saturating integer arithmetic: the clamp bit of v_add/v_sub (and their signed and no-carry forms). */
__kernel void saturating(__global const uint *a, __global const uint *b, __global uint *uadd, __global uint *usub,
                         __global int *sadd, __global int *ssub) {
    size_t i = get_global_id(0);
    uadd[i] = __builtin_elementwise_add_sat(a[i], b[i]);
    usub[i] = __builtin_elementwise_sub_sat(a[i], b[i]);
    sadd[i] = __builtin_elementwise_add_sat((int)a[i], (int)b[i]);
    ssub[i] = __builtin_elementwise_sub_sat((int)a[i], (int)b[i]);
}

typedef half half2 __attribute__((ext_vector_type(2)));
typedef ushort ushort2 __attribute__((ext_vector_type(2)));

/* Packed (VOP3P) halves: max, a product clamped to [0, 1] (the clamp modifier), a saturating add, a shift. */
__kernel void packed_halves(__global const half2 *a, __global const half2 *b, __global half2 *mx, __global half2 *cl,
                            __global const ushort2 *u, __global const ushort2 *v, __global ushort2 *us) {
    size_t i = get_global_id(0);
    mx[i] = __builtin_elementwise_max(a[i], b[i]);
    cl[i] = __builtin_elementwise_min(__builtin_elementwise_max(a[i] * b[i], (half2)0.0h), (half2)1.0h);
    us[i] = __builtin_elementwise_add_sat(u[i], v[i]) ^ (v[i] >> (u[i] & (ushort)7));
}

/* A private array indexed at run time: RDNA keeps it in VGPRs and writes it through M0 (v_movreld). */
__kernel void indexed_private(__global const int *idx, __global double *out) {
    size_t i = get_global_id(0);
    double d[16];
    for (int k = 0; k < 16; k++)
        d[k] = (double)(i + k) / (k + 1);
    int j = idx[i];
    d[j & 15] = 0.5 * d[(j >> 4) & 15];
    out[2 * i] = d[(j >> 8) & 15];
    out[2 * i + 1] = d[(j >> 12) & 15];
}

/* The square root of a magnitude: a correctly rounded sqrt scales its operand, and selects |x| with v_cndmask's abs
   input modifier. */
__kernel void root_of_magnitude(__global const float *x, __global float *y) {
    size_t i = get_global_id(0);
    y[i] = __builtin_sqrtf(__builtin_fabsf(x[i]));
}
