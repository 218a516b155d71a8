/* Histograms and atomics: every integer atomic on __global and __local memory, returned values used and
 * unused, 64-bit atomics, and a float add built on compare-and-swap. */
#include "prelude.h"

#define BINS 256

/* bins[data[i]]++ straight into global memory */
__kernel void histogram_global(__global const uchar *data, __global uint *bins, uint n) {
    size_t i = get_global_id(0);
    if (i < n) atomic_inc(&bins[data[i]]);
}

/* a per-group histogram in LDS, then merged into bins with one global add per non-empty bin */
__kernel void histogram_local(__global const uchar *data, __global uint *bins, uint n) {
    __local uint local_bins[BINS];
    uint lid = get_local_id(0), size = get_local_size(0);
    for (uint b = lid; b < BINS; b += size) local_bins[b] = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (size_t i = get_global_id(0); i < n; i += get_global_size(0)) atomic_add(&local_bins[data[i]], 1u);
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint b = lid; b < BINS; b += size)
        if (local_bins[b]) atomic_add(&bins[b], local_bins[b]);
}

/* every atomic kind on 16 counters; c[0..15] end in a state that does not depend on the order:
 * add sub smin smax umin umax and or xor inc dec inc_wrap dec_wrap, then c[13 + (v & 1)] += 1 with a
 * per-lane address; c64[0..2]: add64 smax64 xor64 */
__kernel void atomics_global(__global const int *values, __global int *c, __global long *c64, uint limit,
                             uint n) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    int v = values[i];
    atomic_add(&c[0], v);
    atomic_sub(&c[1], v);
    atomic_min(&c[2], v);
    atomic_max(&c[3], v);
    atomic_min((volatile __global uint *)&c[4], (uint)v);
    atomic_max((volatile __global uint *)&c[5], (uint)v);
    atomic_and(&c[6], ~(int)(1u << (v & 31)));
    atomic_or(&c[7], (int)(1u << (v & 31)));
    atomic_xor(&c[8], v);
    atomic_inc(&c[9]);
    atomic_dec(&c[10]);
    atomic_inc_wrap((volatile __global uint *)&c[11], limit);
    atomic_dec_wrap((volatile __global uint *)&c[12], limit);
    atomic_add(&c[13 + (v & 1)], 1);  /* not uniform: a per-lane atomic */
    atomic_add(&c64[0], (long)v * 1048576);
    atomic_max(&c64[1], (long)v * v);
    atomic_xor((volatile __global ulong *)&c64[2], (ulong)(uint)v << 32 | i);
}

/* the same kinds on LDS counters, one set per group (out[g * 18 + k]), plus what only returned values give:
 * a max by compare-and-swap loop (c[12]), exchanges (c[13]), tickets summed (c[15] = sum of c[14]'s olds),
 * and the wrapping inc/dec on LDS (c[16], c[17]) */
__kernel void atomics_local(__global const int *values, __global int *out, uint limit) {
    __local int c[18];
    uint lid = get_local_id(0);
    if (lid < 18) c[lid] = lid == 2 || lid == 4 ? 0x7fffffff : lid == 6 || lid == 12 ? -1 : lid == 17 ? 3 : 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    int v = values[get_global_id(0)];
    atomic_add(&c[0], v);
    atomic_sub(&c[1], v);
    atomic_min(&c[2], v);
    atomic_max(&c[3], v);
    atomic_min((volatile __local uint *)&c[4], (uint)v);
    atomic_max((volatile __local uint *)&c[5], (uint)v);
    atomic_and(&c[6], ~(int)(1u << (v & 31)));
    atomic_or(&c[7], (int)(1u << (v & 31)));
    atomic_xor(&c[8], v);
    atomic_inc(&c[9]);
    atomic_dec(&c[10]);
    atomic_add(&c[11], lid);
    int seen, old = c[12];
    do {
        seen = old;
        old = atomic_cmpxchg(&c[12], seen, max(seen, 3 * v));
    } while (old != seen);
    atomic_xchg(&c[13], 5);
    atomic_add(&c[15], atomic_inc(&c[14]));
    atomic_inc_wrap((volatile __local uint *)&c[16], limit);
    atomic_dec_wrap((volatile __local uint *)&c[17], limit);
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid < 18) out[get_group_id(0) * 18 + lid] = c[lid];
}

/* generic pointers that point into LDS on odd work-items and global memory on even ones: flat_* loads,
 * stores and atomics. lds[lid] starts at 100 * lid; data[i] or lds[lid] gets 7 + i added; out[i] = lds[lid] */
__kernel void flat_pointers(__global int *data, __global int *out) {
    __local int lds[256];
    uint lid = get_local_id(0);
    size_t i = get_global_id(0);
    lds[lid] = 100 * lid;
    barrier(CLK_LOCAL_MEM_FENCE);
    int *p = i & 1 ? (int *)&lds[lid] : (int *)&data[i];
    *p += 7;
    atomic_add(p, (int)i);
    barrier(CLK_LOCAL_MEM_FENCE);
    out[i] = lds[lid];
}

/* old[i] = what work-item i took out of slots[i % nslots] when it put i + 1 there: the olds and the final
 * slots together are the first slots and 1..n, whatever the order */
__kernel void atomic_xchg_slots(__global uint *slots, __global uint *old, uint nslots) {
    uint i = get_global_id(0);
    old[i] = atomic_xchg(&slots[i % nslots], i + 1);
}

/* owner[key[i]] = the first work-item to claim that key (compare-and-swap from -1); won[i] = 1 for it */
__kernel void atomic_cmpxchg_claim(__global const uint *key, __global int *owner, __global int *won) {
    int i = get_global_id(0);
    won[i] = atomic_cmpxchg(&owner[key[i]], -1, i) == -1;
}

/* sums[bin[i]] += x[i] with a float add built on a 32-bit compare-and-swap loop */
static void atomic_add_float(volatile __global float *p, float x) {
    volatile __global uint *u = (volatile __global uint *)p;
    uint old = *u, seen;
    do {
        seen = old;
        old = atomic_cmpxchg(u, seen, __builtin_bit_cast(uint, __builtin_bit_cast(float, seen) + x));
    } while (old != seen);
}

__kernel void atomic_add_float_cas(__global const float *x, __global const uint *bin, __global float *sums,
                                   uint n) {
    size_t i = get_global_id(0);
    if (i < n) atomic_add_float(&sums[bin[i]], x[i]);
}

/* tickets[i] = the counter value work-item i took: the tickets are a permutation of the counter's range */
__kernel void atomic_ticket(__global uint *counter, __global uint *tickets) {
    tickets[get_global_id(0)] = atomic_inc(counter);
}
