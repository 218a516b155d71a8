/* Bitonic sort: a whole sort of each group's chunk in LDS, and one global compare-exchange step. */
#include "prelude.h"

#define CHUNK 256

/* sorts each CHUNK-element chunk of data ascending, in place */
__kernel __attribute__((reqd_work_group_size(CHUNK, 1, 1)))
void bitonic_sort_local(__global uint *data) {
    __local uint v[CHUNK];
    uint lid = get_local_id(0);
    size_t base = get_group_id(0) * CHUNK;
    v[lid] = data[base + lid];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint k = 2; k <= CHUNK; k <<= 1) {
        for (uint j = k >> 1; j > 0; j >>= 1) {
            uint partner = lid ^ j;
            if (partner > lid) {
                uint a = v[lid], b = v[partner];
                bool up = (lid & k) == 0;
                if ((a > b) == up) {
                    v[lid] = b;
                    v[partner] = a;
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    data[base + lid] = v[lid];
}

/* one step (k, j) of a global bitonic sort over n = a power of two keys: one work-item per element */
__kernel void bitonic_step(__global int *keys, uint k, uint j) {
    uint i = get_global_id(0), partner = i ^ j;
    if (partner <= i) return;
    int a = keys[i], b = keys[partner];
    bool up = (i & k) == 0;
    if ((a > b) == up) {
        keys[i] = b;
        keys[partner] = a;
    }
}
