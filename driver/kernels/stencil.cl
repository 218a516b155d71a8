/* Stencils on 2D and 3D grids (row-major, x fastest); boundary cells are copied unchanged. */
#include "prelude.h"

__kernel void stencil2d_5pt(__global const float *in, __global float *out, uint width, uint height) {
    size_t x = get_global_id(0), y = get_global_id(1);
    if (x >= width || y >= height) return;
    size_t i = y * width + x;
    if (x == 0 || y == 0 || x == width - 1 || y == height - 1) {
        out[i] = in[i];
        return;
    }
    out[i] = 0.5f * in[i] + 0.125f * (in[i - 1] + in[i + 1] + in[i - width] + in[i + width]);
}

__kernel void stencil3d_7pt(__global const float *in, __global float *out, uint nx, uint ny, uint nz) {
    size_t x = get_global_id(0), y = get_global_id(1), z = get_global_id(2);
    if (x >= nx || y >= ny || z >= nz) return;
    size_t plane = (size_t)nx * ny, i = z * plane + y * nx + x;
    if (x == 0 || y == 0 || z == 0 || x == nx - 1 || y == ny - 1 || z == nz - 1) {
        out[i] = in[i];
        return;
    }
    out[i] = 0.25f * in[i] + 0.125f * (in[i - 1] + in[i + 1] + in[i - nx] + in[i + nx] + in[i - plane] +
                                       in[i + plane]);
}
