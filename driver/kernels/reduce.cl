/* Reductions and scans inside a workgroup: LDS, barriers, a dynamic __local argument, cross-lane permutes, DPP. */
#include "prelude.h"

#define GROUP 256

/* partial[g] = sum of the group's elements (0 past n), tree order in LDS */
__kernel __attribute__((reqd_work_group_size(GROUP, 1, 1)))
void reduce_sum(__global const float *in, __global float *partial, uint n) {
    __local float sums[GROUP];
    uint lid = get_local_id(0);
    size_t i = get_global_id(0);
    sums[lid] = i < n ? in[i] : 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = GROUP / 2; s > 0; s >>= 1) {
        if (lid < s) sums[lid] += sums[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) partial[get_group_id(0)] = sums[0];
}

/* partial[g] = max of the group's elements; the LDS array is the kernel's dynamic __local argument
 * (get_local_size(0) floats), so any power-of-two group size works */
__kernel void reduce_max_dynamic(__global const float *in, __global float *partial, uint n, __local float *work) {
    uint lid = get_local_id(0), size = get_local_size(0);
    size_t i = get_global_id(0);
    work[lid] = i < n ? in[i] : -__builtin_inff();
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = size / 2; s > 0; s >>= 1) {
        if (lid < s) work[lid] = fmax(work[lid], work[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) partial[get_group_id(0)] = work[0];
}

/* two dynamic __local arrays: the group's dot product of a and b and its sum of squares of a */
__kernel void dot_dynamic2(__global const int *a, __global const int *b, __global int *out, __local int *dots,
                           __local int *squares) {
    uint lid = get_local_id(0), size = get_local_size(0);
    size_t i = get_global_id(0);
    dots[lid] = a[i] * b[i];
    squares[lid] = a[i] * a[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = size / 2; s > 0; s >>= 1) {
        if (lid < s) {
            dots[lid] += dots[lid + s];
            squares[lid] += squares[lid + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        out[2 * get_group_id(0)] = dots[0];
        out[2 * get_group_id(0) + 1] = squares[0];
    }
}

/* inclusive prefix sum inside each group (Hillis-Steele, double-buffered LDS); totals[g] = the group's sum */
__kernel __attribute__((reqd_work_group_size(GROUP, 1, 1)))
void scan_inclusive(__global const int *in, __global int *out, __global int *totals, uint n) {
    __local int buf[2][GROUP];
    uint lid = get_local_id(0), src = 0;
    size_t i = get_global_id(0);
    buf[0][lid] = i < n ? in[i] : 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint offset = 1; offset < GROUP; offset <<= 1) {
        int v = buf[src][lid];
        if (lid >= offset) v += buf[src][lid - offset];
        buf[src ^ 1][lid] = v;
        src ^= 1;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (i < n) out[i] = buf[src][lid];
    if (lid == GROUP - 1) totals[get_group_id(0)] = buf[src][lid];
}

/* out[i] = sum of in over the 32 consecutive work-items holding i (a butterfly of ds_bpermute inside the
 * wave; 32-lane groups give the same answer in wave32 and wave64) */
__kernel void sum_lanes32(__global const uint *in, __global uint *out) {
    size_t i = get_global_id(0);
    uint lane = lane_id(), v = in[i];
    for (uint m = 16; m > 0; m >>= 1) v += (uint)bpermute((int)((lane ^ m) << 2), (int)v);
    out[i] = v;
}

/* prefix[i] = inclusive prefix sum of each row of 16 lanes, total[i] = the row's sum: DPP row_shr with bound_ctrl's
 * zero fill (rocPRIM's row scan), then row_newbcast:15 / row_share:15 (one encoding on every target) */
__kernel void scan_rows_dpp(__global const uint *in, __global uint *prefix, __global uint *total) {
    size_t i = get_global_id(0);
    uint x = in[i];
    x += DPP_ROW(x, 0x111);
    x += DPP_ROW(x, 0x112);
    x += DPP_ROW(x, 0x114);
    x += DPP_ROW(x, 0x118);
    prefix[i] = x;
    total[i] = DPP_ROW(x, 0x15f);
}
