"""AMDGPU instruction set: encodings, per-target opcode tables and the decoder, checked against LLVM."""

from .decoder import DecodeError, Instruction, decode

__all__ = ["DecodeError", "Instruction", "decode"]
