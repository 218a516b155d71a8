"""The kernel corpus: OpenCL C kernels, the code objects built from them for every supported target, and a numpy
reference for each.

* `*.cl` -- the kernels (one file per theme), written against `prelude.h`, their whole environment: no device
  libraries; work-item functions from amdgcn builtins and the code object v5 hidden arguments.
* `built/corpus-<target>.co` -- one code object (v5) per target (gfx90a, gfx942, gfx1030, gfx1100, gfx1201)
  holding every kernel; `built/corpus.hipfb` -- a clang offload bundle of all five, as HIP fat binaries are;
  `built/BUILD.txt` -- the compiler that made them. Committed, so nothing needs a compiler to load them.
* `build.py` -- `python -m kfdtrace.driver.kernels.build` rebuilds them, byte for byte.
* `reference.py` -- `CASES`: each kernel's arguments, grid, workgroup size and numpy reference.
* `host.py` -- the same kernels compiled for the host CPU, to check the references against the kernels.
"""
