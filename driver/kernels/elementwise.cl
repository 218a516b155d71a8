/* Elementwise kernels: one work-item per element, a bounds check for the partial last workgroup. */
#include "prelude.h"

__kernel void add_int(__global const int *a, __global const int *b, __global int *c, uint n) {
    size_t i = get_global_id(0);
    if (i < n) c[i] = a[i] + b[i];
}

__kernel void vector_add(__global const float *a, __global const float *b, __global float *c, uint n) {
    size_t i = get_global_id(0);
    if (i < n) c[i] = a[i] + b[i];
}

/* uint4 per work-item: the emulated bandwidth benchmark's copy */
__kernel void memcpy_uint4(__global const uint4 *src, __global uint4 *dst, uint n) {
    size_t i = get_global_id(0);
    if (i < n) dst[i] = src[i];
}

__kernel void bitops_uint(__global const uint *a, __global const uint *b, __global uint *out, uint n) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    uint x = a[i], y = b[i];
    out[i] = (popcount(x) + clz(y)) ^ rotate(x, y & 31) ^ (x >> (y & 31)) ^ ((x & ~y) | (y << 3));
}

/* double precision: fma, division and sqrt */
__kernel void mix_f64(__global const double *a, __global const double *b, __global double *out, uint n) {
    size_t i = get_global_id(0);
    if (i < n) out[i] = a[i] * b[i] - a[i] / (fabs(b[i]) + 2.0) + sqrt(fabs(a[i]));
}

/* average of two images without overflow */
__kernel void blend_uchar4(__global const uchar4 *a, __global const uchar4 *b, __global uchar4 *out, uint n) {
    size_t i = get_global_id(0);
    if (i < n) out[i] = (a[i] >> 1) + (b[i] >> 1) + (a[i] & b[i] & (uchar4)(1));
}

__kernel void mad_float4(__global const float4 *a, __global const float4 *b, __global const float4 *c,
                         __global float4 *out, uint n) {
    size_t i = get_global_id(0);
    if (i < n) out[i] = a[i] * b[i] + c[i];
}

__kernel void mul_f16(__global const half *a, __global const half *b, __global half *out, uint n) {
    size_t i = get_global_id(0);
    if (i < n) out[i] = a[i] * b[i];
}

/* int <-> float conversions (truncation toward zero, as C casts) */
__kernel void convert_int_float(__global const int *a, __global const float *x, __global float *af,
                                __global int *xi, uint n) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    af[i] = (float)a[i] * 0.5f;
    xi[i] = (int)x[i];
}

__kernel void gather(__global const float *src, __global const uint *index, __global float *out, uint n) {
    size_t i = get_global_id(0);
    if (i < n) out[i] = src[index[i]];
}
