"""The kernel corpus: OpenCL C kernels, the code objects built from them for every supported target, and a numpy
reference for each."""
