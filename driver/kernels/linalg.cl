/* Linear algebra: saxpy, gemv, gemm (naive and LDS-tiled) and an LDS-tiled transpose. Matrices are row-major. */
#include "prelude.h"

#define TILE 16

__kernel void saxpy(float a, __global const float *x, __global float *y, uint n) {
    size_t i = get_global_id(0);
    if (i < n) y[i] = a * x[i] + y[i];
}

/* y[rows] = A[rows][cols] x[cols]: one row per work-item */
__kernel void gemv(__global const float *A, __global const float *x, __global float *y, uint rows, uint cols) {
    size_t r = get_global_id(0);
    if (r >= rows) return;
    float acc = 0.0f;
    for (uint k = 0; k < cols; k++) acc += A[r * cols + k] * x[k];
    y[r] = acc;
}

/* C[M][N] = A[M][K] B[K][N]: dimension 0 runs over columns, 1 over rows */
__kernel void gemm_naive(__global const float *A, __global const float *B, __global float *C, uint M, uint N,
                         uint K) {
    size_t col = get_global_id(0), row = get_global_id(1);
    if (row >= M || col >= N) return;
    float acc = 0.0f;
    for (uint k = 0; k < K; k++) acc += A[row * K + k] * B[k * N + col];
    C[row * N + col] = acc;
}

__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void gemm_tiled(__global const float *A, __global const float *B, __global float *C, uint M, uint N, uint K) {
    __local float As[TILE][TILE], Bs[TILE][TILE];
    uint tx = get_local_id(0), ty = get_local_id(1);
    uint col = get_global_id(0), row = get_global_id(1);
    float acc = 0.0f;
    for (uint t = 0; t < K; t += TILE) {
        As[ty][tx] = row < M && t + tx < K ? A[row * K + t + tx] : 0.0f;
        Bs[ty][tx] = col < N && t + ty < K ? B[(t + ty) * N + col] : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint k = 0; k < TILE; k++) acc += As[ty][k] * Bs[k][tx];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (row < M && col < N) C[row * N + col] = acc;
}

/* out[cols][rows] = in[rows][cols]^T through a padded LDS tile (no bank conflicts on the column read) */
__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void transpose(__global const float *in, __global float *out, uint rows, uint cols) {
    __local float tile[TILE][TILE + 1];
    uint tx = get_local_id(0), ty = get_local_id(1);
    uint x = get_group_id(0) * TILE + tx, y = get_group_id(1) * TILE + ty;
    if (x < cols && y < rows) tile[ty][tx] = in[y * cols + x];
    barrier(CLK_LOCAL_MEM_FENCE);
    x = get_group_id(1) * TILE + tx;
    y = get_group_id(0) * TILE + ty;
    if (x < rows && y < cols) out[y * rows + x] = tile[tx][ty];
}
