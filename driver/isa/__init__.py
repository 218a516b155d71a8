"""AMDGPU instruction set: encodings, per-target opcode tables and the decoder, checked against LLVM.

`decode(data, offset, target)` returns an `Instruction` (mnemonic, encoding, opcode, fields, size, text) whose
text is what llvm-objdump-19 -d prints, for gfx90a, gfx942, gfx1030, gfx1100 and gfx1201.

- encodings.py: the encoding families (prefix, size, field layout) of GFX9, and the other targets as deltas.
- <target>.json: per encoding, opcode -> mnemonic, operands and modifiers; generated from llvm-mc-19 by
  generate.py (`python -m kfdtrace.driver.isa.generate`), never edited by hand.
- decoder.py: the decoder, which reads only those tables; operands.py: how constants and registers print.
- llvm.py: batches words through llvm-mc-19 (used by generate.py and the tests).

Known gaps (tests/test_isa_decoder.py holds the measured agreement per target and encoding): gfx11/12 VOP3P in its
DPP forms (NotDecoded), the dpp_ctrl of 64-bit DPP operations, MIMG, MTBUF, EXP, VINTERP/LDSDIR and gfx12
VIMAGE/VSAMPLE are not decoded (DecodeError); MFMA modifiers (cbsz, abid, blgp) and VOP3P's op_sel_hi on some
3-source opcodes print out of LLVM's order; true16 operands (v1.l, v1.h) of gfx11/12 16-bit VOP1/VOP2 print as whole
registers; some operand combinations LLVM rejects (register alignment, operand classes) are accepted.
"""

from .decoder import DecodeError, Instruction, NotDecoded, decode

__all__ = ["DecodeError", "Instruction", "NotDecoded", "decode"]
