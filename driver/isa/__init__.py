"""AMDGPU instruction set: encodings, per-target opcode tables and the decoder, checked against LLVM."""
