"""`kfdtrace disasm`: a code object's kernels, each with its descriptor decoded and its machine code
disassembled by kfdtrace's own decoder (driver/isa), in the form llvm-objdump-19 -d prints instructions."""

from __future__ import annotations

from collections.abc import Iterator

from kfdtrace.driver.code_object import CodeObject, Kernel, read_file
from kfdtrace.driver.code_object_bundle import entries, is_bundle, select
from kfdtrace.driver.code_object_errors import CodeObjectError
from kfdtrace.driver.isa.decoder import DecodeError, decode

__all__ = ["disassemble", "read_code_object"]


def read_code_object(path: str, target: str | None) -> CodeObject:
    """The code object in `path`; from a bundle, the entry for `target` (required when it holds several)."""
    try:
        data = read_file(path)
        if is_bundle(data):
            if target is None:
                targets = sorted({e.target.processor for e in entries(data) if e.target is not None})
                if len(targets) != 1:
                    raise CodeObjectError(f"a bundle for {', '.join(targets) or 'no GPU'}: pick one with --target")
                target = targets[0]
            data = select(data, target)
        obj = CodeObject.parse(data)
        if target is not None:
            obj.check_target(target)
    except CodeObjectError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    return obj


def disassemble(obj: CodeObject, kernel: str | None = None) -> Iterator[str]:
    """The lines of the listing: every kernel (or the one named), its descriptor's fields, its instructions."""
    kernels = [obj.kernel(kernel)] if kernel else list(obj.kernels.values())  # UnknownKernel before any output
    yield f"code object v{obj.version} for {obj.target_id}: {len(obj.kernels)} kernels"
    image = obj.image(0)  # offsets are the ELF's virtual addresses, as llvm-objdump prints them
    for k in kernels:
        yield ""
        yield from _kernel(obj, k, image)


def _kernel(obj: CodeObject, k: Kernel, image: bytes) -> Iterator[str]:
    kd, md = k.descriptor, k.metadata
    yield (f"{k.name}: wave{kd.wave_size}, {md.vgpr_count} VGPRs, {md.sgpr_count} SGPRs, "
           f"{md.group_segment_fixed_size} bytes LDS, {md.private_segment_fixed_size} bytes scratch per "
           f"work-item, {md.kernarg_segment_size} bytes of kernel arguments")
    yield f"  descriptor at {k.descriptor_offset:#x}:"
    for name, value in kd.fields.items():
        yield f"    .amdhsa_{name} {value}"
    yield f"  code at {k.entry_offset:#x}, {k.code_size} bytes:"
    at, end = k.entry_offset, k.entry_offset + k.code_size
    while at < end:
        try:
            insn = decode(image, at, obj.target.name)
            size, text = insn.size, insn.text
        except DecodeError as exc:
            size, text = 4, f".long {int.from_bytes(image[at:at + 4], 'little'):#010x}  // {exc}"
        words = " ".join(f"{int.from_bytes(image[i:i + 4], 'little'):08X}" for i in range(at, at + size, 4))
        yield f"    {at:012x}: {words:<26} {text}"
        at += size
