"""AMDGPU code objects (ELF, code object v4-v6): the target, the kernels (metadata + descriptor + entry point), and
the loadable image relocated for the address the driver copies it to.

    obj = load(data_or_path, "gfx942")           # a code object or an offload bundle, checked against the device
    obj = CodeObject.parse(data)                 # one ELF code object, any supported target
    k = obj.kernel("saxpy")                      # .metadata, .descriptor, .descriptor_offset, .entry_offset
    gpu_bytes = obj.image(base)                  # PT_LOAD segments at their vaddr offsets, relocated for base

The image keeps the segments' relative layout, so the PC-relative reads of .rodata that the compiler emits work
at any base; dynamic relocations (pointer tables: R_AMDGPU_RELATIVE64, R_AMDGPU_ABS64 ...) are applied for it.
Sources: LLVM AMDGPUUsage "ELF Code Object" (header, notes, relocation records; llvm/llvm-project@001388cf);
the EF_AMDGPU_MACH values are the ones clang-19 writes (tests check them against it).
"""

from __future__ import annotations

import io
import os
import stat
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import MappingProxyType

from elftools.common.exceptions import ELFError
from elftools.construct.core import ConstructError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import Relocation as Relocation_
from elftools.elf.sections import Section, SymbolTableSection
from elftools.elf.segments import Segment

from kfdtrace.driver.code_object_bundle import TargetId, entries, is_bundle, select
from kfdtrace.driver.code_object_errors import (
    BadCodeObject,
    BadMetadata,
    CodeObjectError,
    MissingMetadata,
    UnknownKernel,
    WrongTarget,
)
from kfdtrace.driver.code_object_metadata import KernelMetadata, Metadata, parse_metadata
from kfdtrace.driver.families import TARGETS, Target, UnsupportedTarget, target_by_name
from kfdtrace.driver.kernel_descriptor import DESCRIPTOR_SIZE, KernelDescriptor, layout_for

__all__ = ["MACH", "MAX_FILE_BYTES", "RELOCATIONS", "CodeObject", "CodeObjectError", "Kernel", "Relocation", "load",
           "read_file", "without_debug_info"]

ELF_MAGIC = b"\x7fELF"
MAX_FILE_BYTES = 1 << 30  # a code object file given on the command line (a trace's blobs are smaller)
EM_AMDGPU = 224
ELFOSABI_AMDGPU_HSA = 64
ET_DYN = 3
PF_X, PF_W = 1, 2  # ELF segment flags
NT_AMDGPU_METADATA = 32
# Stack bytes a work-item gets beyond the fixed size when its kernel's stack is dynamic (.uses_dynamic_stack: an
# indirect call or recursion, whose depth LLVM leaves to the runtime): CUDA's default thread stack, 1 KiB.
DYNAMIC_STACK = 1024
# e_ident[EI_ABIVERSION] -> code object version (ELFABIVERSION_AMDGPU_HSA_V4..V6); 0 and 1 are v2 and v3.
ABI_VERSIONS = MappingProxyType({2: 4, 3: 5, 4: 6})
EF_AMDGPU_MACH = 0x0FF
# EF_AMDGPU_MACH of each supported target, as clang-19 writes it.
MACH = MappingProxyType({
    "gfx90a": 0x3F, "gfx942": 0x4C,
    "gfx1030": 0x36, "gfx1031": 0x37, "gfx1032": 0x38, "gfx1033": 0x39, "gfx1034": 0x3E, "gfx1035": 0x3D,
    "gfx1036": 0x45,
    "gfx1100": 0x41, "gfx1101": 0x46, "gfx1102": 0x47, "gfx1103": 0x44,
    "gfx1200": 0x48, "gfx1201": 0x4E,
})
_BY_MACH = {v: k for k, v in MACH.items()}
# Code object v4+ feature fields of e_flags: (feature, shift). Value 0 unsupported, 1 any, 2 off, 3 on.
_FEATURES = (("sramecc", 10), ("xnack", 8))
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR_SIZE, _SHDR_SIZE = 56, 64
# Entry sizes of the tables pyelftools walks by sh_size // sh_entsize.
_ENTSIZE = MappingProxyType({"SHT_DYNSYM": 24, "SHT_SYMTAB": 24, "SHT_RELA": 24, "SHT_REL": 16})
MAX_IMAGE = 256 << 20  # bytes; a larger span of segments is refused (a corrupt p_memsz), not allocated
MAX_ALIGN = 2 << 20  # a segment alignment above this (a huge page) is refused: no GPU buffer would be placed so
ENTRY_ALIGN = 256
_PYELFTOOLS_ERRORS = (ELFError, ConstructError, struct.error, ValueError, OverflowError)  # seek past 2**63
_M32, _M64 = (1 << 32) - 1, (1 << 64) - 1


def read_file(path: str) -> bytes:
    """The bytes of a code object file, read in bounded memory and without blocking; CodeObjectError ("cannot read
    it: ...") when it is no regular file (/dev/zero, a pipe), is larger than MAX_FILE_BYTES or cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once, to be refused
    except OSError as e:
        raise CodeObjectError(f"cannot read it: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CodeObjectError("cannot read it: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise CodeObjectError(f"cannot read it: {st.st_size} bytes, more than a code object may be "
                                  f"({MAX_FILE_BYTES})")
        try:
            return f.read(MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES]
        except OSError as e:
            raise CodeObjectError(f"cannot read it: {e.strerror or e}") from None


@dataclass(frozen=True)
class RelocType:
    """One relocation record type: bytes written and value from (S, A, P, B) (AMDGPUUsage "Relocation Records")."""

    name: str
    size: int
    value: Callable[[int, int, int, int], int]
    fits: Callable[[int], bool] = lambda v: True


RELOCATIONS: Mapping[int, RelocType] = MappingProxyType({
    0: RelocType("R_AMDGPU_NONE", 0, lambda s, a, p, b: 0),
    1: RelocType("R_AMDGPU_ABS32_LO", 4, lambda s, a, p, b: (s + a) & _M32),
    2: RelocType("R_AMDGPU_ABS32_HI", 4, lambda s, a, p, b: (s + a) >> 32),
    3: RelocType("R_AMDGPU_ABS64", 8, lambda s, a, p, b: s + a),
    4: RelocType("R_AMDGPU_REL32", 4, lambda s, a, p, b: s + a - p, lambda v: -(1 << 31) <= v < 1 << 31),
    5: RelocType("R_AMDGPU_REL64", 8, lambda s, a, p, b: s + a - p),
    6: RelocType("R_AMDGPU_ABS32", 4, lambda s, a, p, b: s + a, lambda v: 0 <= v <= _M32),
    10: RelocType("R_AMDGPU_REL32_LO", 4, lambda s, a, p, b: (s + a - p) & _M32),
    11: RelocType("R_AMDGPU_REL32_HI", 4, lambda s, a, p, b: ((s + a - p) >> 32) & _M32),
    13: RelocType("R_AMDGPU_RELATIVE64", 8, lambda s, a, p, b: b + a),
})
# In the ABI but not in a linked object: the linker resolves GOT references (7-9); 12 is reserved.
_UNLINKED = MappingProxyType({7: "R_AMDGPU_GOTPCREL", 8: "R_AMDGPU_GOTPCREL32_LO", 9: "R_AMDGPU_GOTPCREL32_HI"})


@dataclass(frozen=True)
class Relocation:
    """A dynamic relocation: write `type`'s value at image offset `offset`. The symbol it names is at image offset
    `symbol`, or at the absolute address `absolute` when `symbol` is None (no symbol, an SHN_ABS or undefined
    weak one)."""

    offset: int
    type: RelocType
    symbol: int | None
    addend: int
    absolute: int = 0
    symbol_name: str = ""


@dataclass(frozen=True)
class Kernel:
    """One kernel of a code object: its metadata, its decoded descriptor, and where both live in the image."""

    name: str
    metadata: KernelMetadata
    descriptor: KernelDescriptor
    descriptor_offset: int  # image offset of the 64-byte descriptor (the AQL packet's kernel_object - base)
    # Image offset of the first instruction (COMPUTE_PGM_LO/HI = (base + this) >> 8). With kernarg preload
    # (descriptor kernarg_preload_spec_length > 0) a CP that preloads starts 256 bytes later (AMDGPUUsage).
    entry_offset: int
    code_size: int  # bytes of machine code (the kernel's function symbol's size; 0 if it has none)

    @property
    def scratch(self) -> int | None:
        """Bytes of scratch each work-item needs, None when it needs none: the descriptor's fixed size, and
        DYNAMIC_STACK more when the metadata says its stack is dynamic."""
        kd = self.descriptor
        size = kd.private_segment_fixed_size + (DYNAMIC_STACK if self.metadata.uses_dynamic_stack else 0)
        return size if kd.enable_private_segment or size else None


@dataclass(frozen=True)
class _Segment:
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    flags: int
    align: int


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Turn what pyelftools raises on malformed input into a BadCodeObject naming the structure."""
    try:
        yield
    except CodeObjectError:
        raise
    except _PYELFTOOLS_ERRORS as e:
        raise BadCodeObject(f"malformed ELF {what} ({type(e).__name__}: {str(e)[:80]})") from None


def _need_bytes(end: int, size: int, what: str) -> None:
    if end > size:
        raise BadCodeObject(f"truncated: the {what} needs {end} bytes, the file has {size}")


def _target_id(flags: int) -> TargetId:
    """The target id e_flags names; WrongTarget for a processor kfdtrace does not support."""
    mach = flags & EF_AMDGPU_MACH
    if mach not in _BY_MACH:
        supported = ", ".join(t.name for t in TARGETS)
        raise WrongTarget(f"code object is for a processor kfdtrace does not support (EF_AMDGPU_MACH {mach:#x}); "
                          f"supported: {supported}")
    features = tuple((name, (flags >> shift) & 3 == 3) for name, shift in _FEATURES if (flags >> shift) & 3 >= 2)
    return TargetId(_BY_MACH[mach], tuple(sorted(features)))


class CodeObject:
    """A parsed AMDGPU code object. Build with `CodeObject.parse(data)` or `load(data, target)`."""

    def __init__(self, *, target: Target, target_id: TargetId, version: int, metadata: Metadata,
                 kernels: dict[str, Kernel], loadable: _Loadable, relocations: tuple[Relocation, ...],
                 writable: bool = False):
        self.target = target  # the families.Target (gfx942 ...)
        self.target_id = target_id  # processor and xnack/sramecc settings from e_flags
        self.version = version  # code object version: 4, 5 or 6
        self.metadata = metadata
        self.kernels: Mapping[str, Kernel] = MappingProxyType(kernels)
        self._loadable = loadable
        self.image_size = loadable.size  # bytes of the image: the end of the highest PT_LOAD segment
        self.image_align = loadable.align  # the base passed to image() must be a multiple of this
        self.relocations = relocations
        # kernels may write the image (program-scope globals in .data/.bss): writable PT_LOAD bytes outside the
        # GNU_RELRO range (.dynamic, which only the loader writes)
        self.writable = writable

    def __repr__(self) -> str:
        return f"<CodeObject v{self.version} {self.target_id} kernels={list(self.kernels)}>"

    def kernel(self, name: str) -> Kernel:
        """The kernel named `name`; UnknownKernel lists the kernels there are."""
        try:
            return self.kernels[name]
        except KeyError:
            have = ", ".join(self.kernels) or "none"
            raise UnknownKernel(f"code object for {self.target_id} has no kernel {name!r}; it has: {have}") from None

    def check_target(self, device: str) -> None:
        """WrongTarget unless the code runs on `device` ("gfx942", or with features "gfx90a:xnack-")."""
        dev = TargetId.parse(device)
        if not self.target_id.fits(dev):
            raise WrongTarget(f"code object is for {self.target_id}; this device is {dev}")

    def image(self, base: int) -> bytes:
        """The loadable image for GPU address `base`: segments at their vaddr offsets, relocations applied."""
        if base % self.image_align or not 0 <= base <= _M64 - self.image_size:
            raise ValueError(f"image base {base:#x} is not a {self.image_align:#x}-aligned 64-bit address")
        out = self._loadable.build()
        for r in self.relocations:
            if not r.type.size:
                continue
            where = base + r.offset
            s = base + r.symbol if r.symbol is not None else r.absolute
            v = r.type.value(s, r.addend, where, base)
            if not r.type.fits(v):
                raise CodeObjectError(f"{r.type.name} at image offset {r.offset:#x} ({r.symbol_name or 'no symbol'})"
                                      f" does not fit {r.type.size * 8} bits for base {base:#x}")
            out[r.offset:r.offset + r.type.size] = (v & ((1 << 8 * r.type.size) - 1)).to_bytes(r.type.size, "little")
        return bytes(out)

    # --- parsing ----------------------------------------------------------------------------------------------
    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> CodeObject:
        """Parse and check an ELF code object; a CodeObjectError subclass names what is wrong."""
        data = bytes(data)
        target_id, version = _check_header(data)
        try:
            target = target_by_name(target_id.processor)
        except UnsupportedTarget as e:  # MACH names a target families.py does not have
            raise WrongTarget(str(e)) from None
        with _reading("headers"):
            elf = ELFFile(io.BytesIO(data))
            headers = list(elf.iter_segments())
            sections = list(elf.iter_sections())
        loadable = _Loadable(data, _segments(headers, len(data)))
        metadata = _metadata(headers, data)
        want = f"amdgcn-amd-amdhsa--{target_id}"
        if not metadata.target.startswith("amdgcn-amd-amdhsa--") or _metadata_target(metadata.target) != target_id:
            raise BadMetadata(f"metadata amdhsa.target {metadata.target!r} disagrees with the ELF header ({want})")
        symbols = _defined_symbols(sections, data)
        kernels = {k.name: _kernel(k, target, symbols, loadable) for k in metadata.kernels}
        relocations = _relocations(sections, data, loadable)
        relro = [(h["p_vaddr"], h["p_vaddr"] + h["p_memsz"]) for h in headers if h["p_type"] == "PT_GNU_RELRO"]
        writable = any(seg.flags & PF_W and not any(lo <= seg.vaddr and seg.vaddr + seg.memsz <= hi for lo, hi in relro)
                       for seg in loadable.segments)
        return cls(target=target, target_id=target_id, version=version, metadata=metadata, kernels=kernels,
                   loadable=loadable, relocations=relocations, writable=writable)


def without_debug_info(data: bytes) -> tuple[bytes, int]:
    """`data` (a code object, or an offload bundle: each of its code objects) with the contents of its DWARF
    sections (.debug_*, never loaded) zeroed: the build's paths and source file names go, the code and its metadata
    stay; and how many bytes were zeroed. BadCodeObject for an ELF file whose section headers cannot be read."""
    if not is_bundle(data):
        return _elf_without_debug_info(data)
    out, zeroed = bytearray(data), 0
    for e in entries(data):
        if e.target is not None:  # the host's entry is empty
            out[e.offset:e.offset + len(e.data)], n = _elf_without_debug_info(e.data)
            zeroed += n
    return bytes(out), zeroed


def _elf_without_debug_info(data: bytes) -> tuple[bytes, int]:
    out = bytearray(data)
    zeroed = 0
    with _reading("section headers"):
        for sec in ELFFile(io.BytesIO(bytes(data))).iter_sections():
            if not sec.name.startswith(".debug") or sec["sh_flags"] & 2 or sec["sh_type"] == "SHT_NOBITS":  # SHF_ALLOC
                continue
            start, size = sec["sh_offset"], sec["sh_size"]
            _need_bytes(start + size, len(data), f"section {sec.name}")
            out[start:start + size] = bytes(size)
            zeroed += size
    return bytes(out), zeroed


def _check_header(data: bytes) -> tuple[TargetId, int]:
    """The checks of the ELF header that name what the file is instead: (target id, code object version)."""
    if is_bundle(data):
        raise BadCodeObject("this is a clang offload bundle, not one code object: load it with "
                            "code_object.load(data, target), which picks the device's entry")
    if data[:4] != ELF_MAGIC[:len(data)]:
        raise BadCodeObject(f"not an ELF file (starts {data[:4]!r}, not {ELF_MAGIC!r})")
    _need_bytes(_EHDR.size, len(data), "ELF header")
    (ident, e_type, machine, _, _, phoff, shoff, flags, _, phentsize, phnum, shentsize, shnum,
     shstrndx) = _EHDR.unpack_from(data)
    if ident[4] != 2 or ident[5] != 1:
        raise BadCodeObject("not a 64-bit little-endian ELF: AMDGPU code objects are ELF64 LSB")
    if machine != EM_AMDGPU:
        raise BadCodeObject(f"not an AMDGPU code object: ELF e_machine is {machine}, AMDGPU is {EM_AMDGPU}")
    if ident[7] != ELFOSABI_AMDGPU_HSA:
        raise BadCodeObject(f"not an AMDHSA code object: ELF OS/ABI is {ident[7]}, AMDGPU_HSA is "
                            f"{ELFOSABI_AMDGPU_HSA} (65 is a Mesa/PAL object)")
    if ident[8] not in ABI_VERSIONS:
        old = {0: " (code object v2)", 1: " (code object v3)"}.get(ident[8], "")
        raise BadCodeObject(f"ELF ABI version {ident[8]}{old} is not supported; kfdtrace reads code object v4, "
                            f"v5 and v6 (ABI versions 2-4)")
    if e_type != ET_DYN:
        raise BadCodeObject(f"ELF type {e_type} is not a shared object: link the object with ld.lld -shared")
    if phentsize != _PHDR_SIZE or not phnum:
        raise BadCodeObject(f"no usable program headers ({phnum} of {phentsize} bytes): not a loadable code object")
    _need_bytes(phoff + phnum * _PHDR_SIZE, len(data), "program header table")
    if shentsize != _SHDR_SIZE or not shnum or shstrndx >= shnum:
        raise BadCodeObject(f"no usable section headers ({shnum} of {shentsize} bytes, names in {shstrndx})")
    _need_bytes(shoff + shnum * _SHDR_SIZE, len(data), "section header table")
    return _target_id(flags), ABI_VERSIONS[ident[8]]


def _metadata_target(text: str) -> TargetId | None:
    try:
        return TargetId.parse(text.removeprefix("amdgcn-amd-amdhsa--"))
    except ValueError:
        return None


def _segments(headers: list[Segment], size: int) -> list[_Segment]:
    """The PT_LOAD segments, checked to lie in the file, not to overlap, and to fit MAX_IMAGE."""
    out = []
    with _reading("program headers"):
        for i, seg in enumerate(headers):
            if seg["p_type"] != "PT_LOAD":
                continue
            s = _Segment(seg["p_offset"], seg["p_vaddr"], seg["p_filesz"], seg["p_memsz"], seg["p_flags"],
                         max(seg["p_align"], 1))
            _need_bytes(s.offset + s.filesz, size, f"PT_LOAD segment {i}")
            if s.filesz > s.memsz or s.align & (s.align - 1) or s.align > MAX_ALIGN or s.vaddr + s.memsz > MAX_IMAGE:
                raise BadCodeObject(f"PT_LOAD segment {i}: file size {s.filesz:#x}, memory size {s.memsz:#x} at "
                                    f"{s.vaddr:#x}, alignment {s.align:#x} do not describe a loadable segment "
                                    f"(images are limited to {MAX_IMAGE >> 20} MiB, alignments to "
                                    f"{MAX_ALIGN >> 20} MiB)")
            out.append(s)
    if not out:
        raise BadCodeObject("no PT_LOAD segment: nothing to load")
    out.sort(key=lambda s: s.vaddr)
    for a, b in zip(out, out[1:], strict=False):
        if a.vaddr + a.memsz > b.vaddr:
            raise BadCodeObject(f"PT_LOAD segments at {a.vaddr:#x} and {b.vaddr:#x} overlap")
    return out


class _Loadable:
    """The PT_LOAD segments of a file, read in place: the image is only built (allocated) by `build`."""

    def __init__(self, data: bytes, segments: list[_Segment]):
        self.data = data
        self.segments = segments
        self.size = max(s.vaddr + s.memsz for s in segments)
        self.align = max(ENTRY_ALIGN, *(s.align for s in segments))

    def at(self, start: int, size: int, *, executable: bool = False, in_file: bool = False) -> _Segment | None:
        """The segment holding image bytes [start, start+size) (of its file bytes if `in_file`), or None."""
        for s in self.segments:
            end = s.vaddr + (s.filesz if in_file else s.memsz)
            if s.vaddr <= start and start + size <= end and (not executable or s.flags & PF_X):
                return s
        return None

    def read(self, start: int, size: int) -> bytes:
        """Image bytes [start, start+size), which `at` found in one segment (zeros past its file bytes)."""
        s = self.at(start, size)
        assert s is not None
        rel = start - s.vaddr
        chunk = self.data[s.offset + rel:s.offset + min(rel + size, s.filesz)] if rel < s.filesz else b""
        return chunk + bytes(size - len(chunk))

    def build(self) -> bytearray:
        """The segments' bytes at their vaddr offsets, zeros between them and past their file sizes."""
        image = bytearray(self.size)
        for s in self.segments:
            image[s.vaddr:s.vaddr + s.filesz] = self.data[s.offset:s.offset + s.filesz]
        return image


def _metadata(headers: list[Segment], data: bytes) -> Metadata:
    """The NT_AMDGPU_METADATA note of the PT_NOTE segments, parsed."""
    desc = None
    with _reading("notes"):
        for seg in headers:
            if seg["p_type"] != "PT_NOTE" or desc is not None:
                continue
            _need_bytes(seg["p_offset"] + seg["p_filesz"], len(data), "PT_NOTE segment")
            for note in seg.iter_notes():
                if note["n_name"] == "AMDGPU" and note["n_type"] == NT_AMDGPU_METADATA:
                    desc = note["n_descdata"]
                    if len(desc) != note["n_descsz"] or note["n_offset"] + note["n_size"] > len(data):
                        raise BadCodeObject("truncated: the NT_AMDGPU_METADATA note runs past the end of the file")
                    break
    if desc is None:
        raise MissingMetadata("no NT_AMDGPU_METADATA note (owner AMDGPU, type 32): the object is code object v3 or "
                              "older, or was stripped")
    return parse_metadata(bytes(desc))


def _checked_table(section: Section, data: bytes, what: str) -> None:
    """A symbol or relocation table lies in the file with the entry size pyelftools will divide by."""
    want = _ENTSIZE[section["sh_type"]]
    if section["sh_entsize"] != want:
        raise BadCodeObject(f"{what} section {section.name!r}: entry size {section['sh_entsize']}, not {want}")
    _need_bytes(section["sh_offset"] + section["sh_size"], len(data), f"{what} section {section.name!r}")


def _defined_symbols(sections: list[Section], data: bytes) -> dict[str, tuple[int, int, str]]:
    """Defined symbols of .dynsym (where the runtime looks), then .symtab: name -> (value, size, type)."""
    out: dict[str, tuple[int, int, str]] = {}
    with _reading("symbol table"):
        for kind in ("SHT_SYMTAB", "SHT_DYNSYM"):  # .dynsym last: it wins
            for sec in sections:
                if sec["sh_type"] != kind:
                    continue
                _checked_table(sec, data, "symbol")
                for sym in sec.iter_symbols():
                    if sym["st_shndx"] != "SHN_UNDEF" and sym.name:
                        out[sym.name] = (sym["st_value"], sym["st_size"], sym["st_info"]["type"])
    return out


def _kernel(md: KernelMetadata, target: Target, symbols: Mapping[str, tuple[int, int, str]],
            loadable: _Loadable) -> Kernel:
    """A kernel's descriptor found by its symbol, decoded, and checked against the metadata."""
    where = f"kernel {md.name!r}"
    if md.symbol not in symbols:
        raise BadCodeObject(f"{where}: no symbol {md.symbol!r} for its kernel descriptor")
    kd_off, kd_size, _ = symbols[md.symbol]
    if kd_size != DESCRIPTOR_SIZE or not loadable.at(kd_off, DESCRIPTOR_SIZE, in_file=True):
        raise BadCodeObject(f"{where}: descriptor symbol {md.symbol!r} ({kd_size} bytes at {kd_off:#x}) is not "
                            f"{DESCRIPTOR_SIZE} bytes inside a loaded segment")
    kd = KernelDescriptor.decode(loadable.read(kd_off, DESCRIPTOR_SIZE), layout_for(target.family),
                                 f"{where} descriptor")
    entry = kd_off + kd.kernel_code_entry_byte_offset
    if entry % ENTRY_ALIGN or not loadable.at(entry, 4, executable=True, in_file=True):
        raise BadCodeObject(f"{where}: entry point {entry:#x} (descriptor at {kd_off:#x} "
                            f"{kd.kernel_code_entry_byte_offset:+#x}) is not a {ENTRY_ALIGN}-byte aligned address "
                            f"in an executable segment")
    _agree(md, kd)
    code = symbols.get(md.name)
    code_size = code[1] if code and code[0] == entry and code[2] == "STT_FUNC" else 0
    if code_size and not loadable.at(entry, code_size, executable=True, in_file=True):
        raise BadCodeObject(f"{where}: its code symbol claims {code_size:#x} bytes from entry point {entry:#x}, "
                            f"past the executable segment holding it")
    return Kernel(md.name, md, kd, kd_off, entry, code_size)


def _agree(md: KernelMetadata, kd: KernelDescriptor) -> None:
    """The metadata and the descriptor describe the same kernel (a corrupt or spliced file fails here)."""
    pairs = (("wavefront_size", md.wavefront_size, kd.wave_size),
             ("kernarg_segment_size", md.kernarg_segment_size, kd.kernarg_size),
             ("group_segment_fixed_size", md.group_segment_fixed_size, kd.group_segment_fixed_size),
             ("private_segment_fixed_size", md.private_segment_fixed_size, kd.private_segment_fixed_size))
    for name, meta, desc in pairs:
        if meta != desc:
            raise BadMetadata(f"kernel {md.name!r}: metadata .{name} is {meta}, its descriptor says {desc}")


def _relocations(sections: list[Section], data: bytes, loadable: _Loadable) -> tuple[Relocation, ...]:
    """The dynamic relocations (allocated SHT_RELA/SHT_REL sections), checked to be applicable."""
    out = []
    with _reading("relocations"):
        for sec in sections:
            if sec["sh_type"] not in ("SHT_RELA", "SHT_REL") or not sec["sh_flags"] & 2:  # SHF_ALLOC
                continue
            _checked_table(sec, data, "relocation")
            symtab = None
            if sec["sh_link"]:
                if sec["sh_link"] >= len(sections):
                    raise BadCodeObject(f"relocation section {sec.name!r} links to section {sec['sh_link']}, "
                                        f"past the {len(sections)} there are")
                symtab = sections[sec["sh_link"]]
                if symtab["sh_type"] not in ("SHT_DYNSYM", "SHT_SYMTAB"):
                    raise BadCodeObject(f"relocation section {sec.name!r} links to {symtab.name!r}, no symbol table")
                _checked_table(symtab, data, "symbol")
            for rel in sec.iter_relocations():
                out.append(_relocation(rel, sec["sh_type"] == "SHT_RELA", symtab, loadable))
    return tuple(out)


def _relocation(rel: Relocation_, has_addend: bool, symtab: SymbolTableSection | None,
                loadable: _Loadable) -> Relocation:
    offset, kind, index = rel["r_offset"], rel["r_info_type"], rel["r_info_sym"]
    rtype = RELOCATIONS.get(kind)
    if rtype is None:
        name = _UNLINKED.get(kind, "an unknown type")
        raise BadCodeObject(f"relocation at {offset:#x} has type {kind} ({name}), which a linked code object "
                            f"does not use; kfdtrace applies {', '.join(t.name for t in RELOCATIONS.values())}")
    if rtype.size and not loadable.at(offset, rtype.size):
        raise BadCodeObject(f"{rtype.name} at {offset:#x} lies outside the loaded segments")
    if has_addend:
        addend = rel["r_addend"]
    else:  # SHT_REL: the addend is what the place holds
        addend = int.from_bytes(loadable.read(offset, rtype.size), "little") if rtype.size else 0
    symbol: int | None = None
    absolute, name = 0, ""
    if index:
        if symtab is None or index >= symtab.num_symbols():
            raise BadCodeObject(f"{rtype.name} at {offset:#x} names symbol {index}, which is not in its table")
        sym = symtab.get_symbol(index)
        name = sym.name
        if sym["st_shndx"] == "SHN_ABS":
            absolute = sym["st_value"]
        elif sym["st_shndx"] != "SHN_UNDEF":
            symbol = sym["st_value"]
        elif sym["st_info"]["bind"] != "STB_WEAK":
            raise BadCodeObject(f"{rtype.name} at {offset:#x} refers to undefined symbol {name!r}: the code object "
                                f"needs another object linked into it")
    return Relocation(offset, rtype, symbol, addend, absolute, name)


def load(source: bytes | bytearray | memoryview | str | PathLike, target: str) -> CodeObject:
    """A code object for the device `target` from bytes or a file: an ELF code object (its target checked) or a
    clang offload bundle (the device's entry picked). The same bytes for the same target give the same object,
    parsed once (a CodeObject does not change): the driver loads it, then a recorder reads it again."""
    data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else Path(source).read_bytes()
    obj = _PARSED.get((data, target))
    if obj is None:
        obj = CodeObject.parse(select(data, target) if is_bundle(data) else data)
        obj.check_target(target)
        if len(_PARSED) >= PARSED_KEPT:
            _PARSED.clear()  # (threads may load at once: a clear is one step)
        _PARSED[(data, target)] = obj
    return obj


PARSED_KEPT = 16  # code objects load() keeps parsed
_PARSED: dict[tuple[bytes, str], CodeObject] = {}
