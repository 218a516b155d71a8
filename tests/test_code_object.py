"""The code object loader (kfdtrace.driver.code_object and friends) against real code objects built by clang-19
(tests/fixtures/code_objects), checked against what LLVM's own tools read from them."""

from __future__ import annotations

import importlib.util
import io
import random
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import msgpack
import pytest
from elftools.elf.elffile import ELFFile

from kfdtrace.driver.code_object import MACH, RELOCATIONS, CodeObject, load
from kfdtrace.driver.code_object_bundle import BUNDLE_MAGIC, TargetId, entries, select
from kfdtrace.driver.code_object_errors import (
    BadCodeObject,
    BadMetadata,
    CodeObjectError,
    MissingMetadata,
    TargetNotInBundle,
    UnknownKernel,
    WrongTarget,
)
from kfdtrace.driver.code_object_metadata import parse_metadata
from kfdtrace.driver.families import FAMILIES, TARGETS
from kfdtrace.driver.kernel_descriptor import LAYOUTS, Bits, KernelDescriptor, Layout

FIXTURES = Path(__file__).parent / "fixtures" / "code_objects"


def _build_script() -> ModuleType:
    """The fixtures' build script (which objects exist, and how they are made), under a name of its own."""
    spec = importlib.util.spec_from_file_location("code_object_fixtures_build", FIXTURES / "build.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


build = _build_script()

CODE_OBJECTS = sorted(FIXTURES.glob("*.co"))
TARGET_NAMES = build.TARGETS
BASE_A, BASE_B = 0x7F12_3400_0000, 0x1_0000_0000


def need(*tools: str) -> None:
    """Skip unless the LLVM tools are installed (.ci/run installs them)."""
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def run(*cmd: str | Path) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True).stdout


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@pytest.fixture(scope="module")
def parsed() -> dict[str, CodeObject]:
    return {p.stem: CodeObject.parse(p.read_bytes()) for p in CODE_OBJECTS}


# --- the fixtures themselves ------------------------------------------------------------------------------
def test_fixture_set_is_what_the_build_script_makes() -> None:
    assert {p.stem for p in CODE_OBJECTS} == set(build.outputs())
    assert (FIXTURES / f"{build.BUNDLE}.hipfb").is_file()


def test_rebuilt_fixtures_are_byte_identical(tmp_path: Path) -> None:
    need("clang-19", "ld.lld-19", "clang-offload-bundler-19")
    subprocess.run([sys.executable, str(FIXTURES / "build.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    rebuilt = sorted(p.name for p in tmp_path.iterdir())
    assert rebuilt == sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".co", ".hipfb"))
    for name in rebuilt:
        assert (tmp_path / name).read_bytes() == fixture(name), f"{name} differs from the committed file"


def test_mach_table_is_what_clang_writes(tmp_path: Path) -> None:
    """EF_AMDGPU_MACH for every supported target, as clang-19 stamps it into an object."""
    need("clang-19")
    src = tmp_path / "k.cl"
    src.write_text("kernel void k(global int *p) { *p = 1; }\n")
    assert set(MACH) == {t.name for t in TARGETS}
    for t in TARGETS:
        obj = tmp_path / f"{t.name}.o"
        run("clang-19", "-x", "cl", "-target", "amdgcn-amd-amdhsa", f"-mcpu={t.name}", "-nogpulib", "-c", src,
            "-o", obj)
        flags = struct.unpack_from("<I", obj.read_bytes(), 48)[0]
        assert flags & 0xFF == MACH[t.name], t.name


# --- header and target ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", CODE_OBJECTS, ids=ids(CODE_OBJECTS))
def test_target_and_version(path: Path, parsed) -> None:
    obj = parsed[path.stem]
    source, target, flags = build.outputs()[path.stem]
    assert obj.target.name == target and str(obj.target_id) == target  # clang's default: features "any"
    assert obj.version == (4 if "-mcode-object-version=4" in flags else 6 if "-mcode-object-version=6" in flags
                           else 5)
    assert obj.metadata.target == f"amdgcn-amd-amdhsa--{target}"
    assert obj.metadata.version == ((1, 1) if obj.version == 4 else (1, 2))


def _with_flags(data: bytes, flags: int) -> bytes:
    return data[:48] + struct.pack("<I", flags) + data[52:]


def test_feature_bits_of_e_flags() -> None:
    """xnack/sramecc on/off in e_flags (values from clang-19: gfx942:xnack+ is 0x74C, gfx942:sramecc-:xnack- 0xA4C)
    become the target id, which the metadata's amdhsa.target must agree with."""
    data = fixture("lut-gfx942.co")
    spec = "amdgcn-amd-amdhsa--gfx942"
    with pytest.raises(BadMetadata, match=r"disagrees with the ELF header \(amdgcn-amd-amdhsa--gfx942:xnack\+\)"):
        CodeObject.parse(_with_flags(data, 0x74C))
    # Both say sramecc- xnack-: an object for devices with those settings only.
    doc = _doc(data)
    doc["amdhsa.target"] = spec + ":sramecc-:xnack-"
    obj = CodeObject.parse(_replace_note(_with_flags(data, 0xA4C), msgpack.packb(doc)))
    assert str(obj.target_id) == "gfx942:sramecc-:xnack-"
    obj.check_target("gfx942:xnack-:sramecc-")
    obj.check_target("gfx942")  # a device whose settings are not stated
    with pytest.raises(WrongTarget, match=r"^code object is for gfx942:sramecc-:xnack-; this device is "
                                          r"gfx942:xnack\+$"):
        obj.check_target("gfx942:xnack+")


def test_wrong_target_names_both() -> None:
    with pytest.raises(WrongTarget, match=r"^code object is for gfx1100; this device is gfx942$"):
        load(fixture("args-gfx1100.co"), "gfx942")
    assert load(FIXTURES / "args-gfx1100.co", "gfx1100").target.name == "gfx1100"


def test_the_same_bytes_for_the_same_target_are_parsed_once() -> None:
    """The driver loads an object, then a recorder reads the same bytes again (46 ms a parse): one object."""
    data = fixture("args-gfx1100.co")
    assert load(data, "gfx1100") is load(bytearray(data), "gfx1100")
    with pytest.raises(WrongTarget):  # a target it does not fit is checked, never remembered
        load(data, "gfx942")
    with pytest.raises(WrongTarget):
        load(data, "gfx942")


def test_unsupported_processor() -> None:
    data = _with_flags(fixture("lut-gfx942.co"), 0x530)  # gfx908 (MI100)
    with pytest.raises(WrongTarget, match=r"does not support \(EF_AMDGPU_MACH 0x30\); supported: gfx90a, gfx942"):
        CodeObject.parse(data)


# --- metadata against llvm-readelf ------------------------------------------------------------------------
def _yaml(text: str) -> object:
    """The YAML subset llvm-readelf prints for AMDGPU metadata: maps, lists ("- "), scalars."""
    toks: list[tuple[int, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        indent, body = len(line) - len(line.lstrip()), line.strip()
        while body.startswith("- ") or body == "-":
            toks.append((indent, "-"))
            body, indent = body[2:].strip(), indent + 2
        if body:
            toks.append((indent, body))

    def scalar(s: str) -> object:
        if s.startswith("'"):
            return s[1:-1].replace("''", "'")
        if s in ("true", "false"):
            return s == "true"
        return int(s) if re.fullmatch(r"-?\d+", s) else s

    def block(pos: int, indent: int) -> tuple[object, int]:
        if toks[pos][1] == "-":
            items = []
            while pos < len(toks) and toks[pos] == (indent, "-"):
                value, pos = block(pos + 1, toks[pos + 1][0])
                items.append(value)
            return items, pos
        if ":" not in toks[pos][1]:
            return scalar(toks[pos][1]), pos + 1
        out = {}
        while pos < len(toks) and toks[pos][0] == indent and toks[pos][1] != "-":
            key, _, rest = toks[pos][1].partition(":")
            pos += 1
            if rest.strip():
                out[key] = scalar(rest.strip())
            else:
                out[key], pos = block(pos, toks[pos][0])
        return out, pos

    return block(0, toks[0][0])[0]


def _readelf_metadata(path: Path) -> dict:
    out = run("llvm-readelf-19", "--notes", path)
    body = out.split("---\n", 1)[1].split("\n...", 1)[0]
    return _yaml(body)  # type: ignore[return-value]


UNMODELLED_KERNEL_KEYS = {".language_version"}  # the OpenCL version: nothing a dispatcher needs


@pytest.mark.parametrize("path", CODE_OBJECTS, ids=ids(CODE_OBJECTS))
def test_metadata_matches_llvm_readelf(path: Path, parsed) -> None:
    need("llvm-readelf-19")
    want = _readelf_metadata(path)
    md = parsed[path.stem].metadata
    assert md.target == want["amdhsa.target"] and list(md.version) == want["amdhsa.version"]
    assert [k.name for k in md.kernels] == [k[".name"] for k in want["amdhsa.kernels"]]
    for got, ref in zip(md.kernels, want["amdhsa.kernels"], strict=True):
        for key, value in ref.items():
            if key in UNMODELLED_KERNEL_KEYS:
                continue
            if key == ".args":
                assert len(got.args) == len(value)
                for arg, ref_arg in zip(got.args, value, strict=True):
                    for akey, avalue in ref_arg.items():
                        assert getattr(arg, akey[1:]) == avalue, (got.name, akey)
                continue
            mine = getattr(got, key[1:])
            assert (list(mine) if isinstance(mine, tuple) else mine) == value, (got.name, key)


def test_hidden_arguments_by_value_kind(parsed) -> None:
    """Code object v5 hidden arguments, at their ABI offsets from the first hidden one (amd-facts §11)."""
    k = parsed["dynlds-gfx942"].kernel("block_sum").metadata
    assert [a.value_kind for a in k.explicit_args] == ["global_buffer", "global_buffer", "dynamic_shared_pointer"]
    hidden = k.hidden_args
    start = hidden["hidden_block_count_x"].offset
    abi = {"hidden_block_count_x": (0, 4), "hidden_group_size_x": (12, 2), "hidden_remainder_z": (22, 2),
           "hidden_global_offset_x": (40, 8), "hidden_grid_dims": (64, 2), "hidden_dynamic_lds_size": (120, 4)}
    for kind, (offset, size) in abi.items():
        assert (hidden[kind].offset - start, hidden[kind].size) == (offset, size), kind
    assert k.explicit_args[2].pointee_align == 4 and k.explicit_args[2].address_space == "local"
    v4 = parsed["lut-gfx942-v4"].kernel("lut").metadata
    assert "hidden_block_count_x" not in v4.hidden_args and "hidden_group_size_x" not in v4.hidden_args


# --- kernel descriptor against llvm-objdump ----------------------------------------------------------------
# Printed by llvm-objdump but not stored in the descriptor: the assembler's reservations, always printed as 0.
NOT_ENCODED = {"reserve_vcc", "reserve_flat_scratch", "reserve_xnack_mask"}
# Decoded here, not printed by llvm-objdump-19, and required to be 0 by AMDGPUUsage (the disassembler refuses a
# descriptor with them set, so its success checks them too).
MUST_BE_ZERO = {"priority", "priv", "debug_mode", "bulky", "cdbg_user", "enable_trap_handler",
                "enable_exception_address_watch", "enable_exception_memory", "granulated_lds_size",
                "kernarg_preload_spec_length", "kernarg_preload_spec_offset", "shared_vgpr_count", "inst_pref_size",
                "trap_on_start", "trap_on_end", "image_op", "disable_perf", "enable_dynamic_vgpr", "wgp_takeover",
                "glg_en"}
KERNELS = [(p, k) for p in CODE_OBJECTS for k in CodeObject.parse(p.read_bytes()).kernels]


def _objdump_descriptor(path: Path, kernel: str, kd_offset: int, tmp_path: Path, gfx10_plus: bool) -> dict:
    """llvm-objdump-19's .amdhsa_ directives for a descriptor. clang-19 fills RSRC1 bits 9:6 on gfx10+, which
    AMDGPUUsage reserves, and llvm-objdump-19 then refuses the descriptor; a copy with them cleared is read."""
    data = bytearray(path.read_bytes())
    if gfx10_plus:
        with path.open("rb") as f:
            kd_file = _file_offset(ELFFile(f), kd_offset)
        rsrc1 = struct.unpack_from("<I", data, kd_file + 48)[0]
        struct.pack_into("<I", data, kd_file + 48, rsrc1 & ~(0xF << 6))
    copy = tmp_path / path.name
    copy.write_bytes(data)
    out = run("llvm-objdump-19", "-D", f"--disassemble-symbols={kernel}.kd", copy)
    directives = dict(re.findall(r"^\s*\.amdhsa_(\w+) (\d+)$", out, re.M))
    assert directives, out
    return {k: int(v) for k, v in directives.items()}


def _file_offset(elf: ELFFile, vaddr: int) -> int:
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= vaddr < seg["p_vaddr"] + seg["p_filesz"]:
            return vaddr - seg["p_vaddr"] + seg["p_offset"]
    raise AssertionError(f"{vaddr:#x} is not in a segment")


@pytest.mark.parametrize(("path", "kernel"), KERNELS, ids=[f"{p.stem}-{k}" for p, k in KERNELS])
def test_descriptor_matches_llvm_objdump(path: Path, kernel: str, parsed, tmp_path: Path) -> None:
    need("llvm-objdump-19")
    k = parsed[path.stem].kernel(kernel)
    kd = k.descriptor
    gfx10_plus = parsed[path.stem].target.family.gfx_major >= 10
    want = _objdump_descriptor(path, kernel, k.descriptor_offset, tmp_path, gfx10_plus)
    derived = {"next_free_vgpr": kd.next_free_vgpr, "next_free_sgpr": kd.next_free_sgpr,
               "accum_offset": kd.accum_offset, "group_segment_fixed_size": kd.group_segment_fixed_size,
               "private_segment_fixed_size": kd.private_segment_fixed_size, "kernarg_size": kd.kernarg_size}
    if gfx10_plus:  # compared on the cleared copy; the object's own value is kept as clang wrote it
        derived["next_free_sgpr"] = 8
    for name, value in want.items():
        if name in NOT_ENCODED:
            continue
        mine = kd.fields[name] if name in kd.fields else derived.get(name)
        assert mine == value, f"{path.stem} {kernel}: .amdhsa_{name} is {value}, decoded {mine}"
    if parsed[path.stem].version == 4:  # .amdhsa_uses_dynamic_stack is code object v5+
        assert kd.uses_dynamic_stack == 0 and "uses_dynamic_stack" not in want
        want["uses_dynamic_stack"] = 0
    shown = set(want) | {"granulated_workitem_vgpr_count", "granulated_wavefront_sgpr_count",
                         "granulated_accum_offset", "user_sgpr_count"}
    for name, value in kd.fields.items():
        if name not in shown:
            assert name in MUST_BE_ZERO and value == 0, f"{name}={value} is decoded but neither shown nor 0"
    enabled = sum(n for _, n in kd.user_sgprs)
    if kd.layout.name == "gfx11" and kd.wave_size == 32:  # padded: user + system SGPRs reach 16
        assert kd.system_sgpr_start == max(enabled, 16 - len(kd.system_sgprs))
    else:
        assert kd.system_sgpr_start == kd.user_sgpr_count == enabled


@pytest.mark.parametrize("path", CODE_OBJECTS, ids=ids(CODE_OBJECTS))
def test_entry_points_are_the_kernel_symbols(path: Path, parsed) -> None:
    """descriptor + kernel_code_entry_byte_offset is the kernel function's address, per llvm-readelf."""
    need("llvm-readelf-19")
    syms = {m[2]: (int(m[0], 16), int(m[1])) for m in
            re.findall(r"^\s*\d+: ([0-9a-f]+)\s+(\d+) \w+\s+\w+\s+\w+\s+\S+ (\S+)$", run("llvm-readelf-19", "-s", path),
                       re.M)}
    for k in parsed[path.stem].kernels.values():
        assert (k.entry_offset, k.code_size) == syms[k.name]
        assert k.descriptor_offset == syms[f"{k.name}.kd"][0]


def test_derived_dispatch_facts(parsed) -> None:
    """Wave size, user and system SGPRs, work-item id dimensions, scratch and LDS as the dispatcher needs them."""
    for name, obj in parsed.items():
        for k in obj.kernels.values():
            kd = k.descriptor
            native = 64 if obj.target.family.gfx_major == 9 or name.endswith("wave64") else 32
            assert kd.wave_size == native == k.metadata.wavefront_size, name
            assert kd.enable_private_segment == (k.name == "scratch"), name
    ids_kd = parsed["args-gfx942"].kernel("ids").descriptor
    assert ids_kd.user_sgprs == (("dispatch_ptr", 2), ("kernarg_segment_ptr", 2))
    assert ids_kd.system_sgprs == ("workgroup_id_x", "workgroup_id_y", "workgroup_id_z")
    assert ids_kd.workgroup_id_enables == (True, True, True) and ids_kd.workitem_id_dims == 3
    assert parsed["args-gfx942"].kernel("args").descriptor.workitem_id_dims == 1
    # Absolute flat scratch (gfx90a, gfx1030): buffer V#, flat scratch init and the wave offset SGPR.
    old = parsed["scratch-gfx90a"].kernel("scratch").descriptor
    assert old.user_sgprs == (("private_segment_buffer", 4), ("kernarg_segment_ptr", 2), ("flat_scratch_init", 2))
    assert old.system_sgprs == ("workgroup_id_x", "private_segment_wavefront_offset")
    # Architected flat scratch (gfx942, gfx11, gfx12): none of those.
    for name in ("scratch-gfx942", "scratch-gfx1100", "scratch-gfx1201"):
        kd = parsed[name].kernel("scratch").descriptor
        assert kd.user_sgprs == (("kernarg_segment_ptr", 2),) and kd.layout.architected_flat_scratch
        ids_in_sgprs = () if kd.layout.architected_sgprs else ("workgroup_id_x",)  # GFX12: in TTMP9
        assert kd.private_segment_fixed_size == 260 and kd.system_sgprs == ids_in_sgprs
    assert parsed["scratch-gfx1201"].kernel("scratch").descriptor.layout.architected_sgprs
    lds = parsed["dynlds-gfx1100"].kernel("block_sum").descriptor
    assert lds.group_segment_fixed_size == 4 and lds.lds_size_field(4 + 256 * 4) == 3


# --- the layouts ------------------------------------------------------------------------------------------
def test_every_family_has_a_descriptor_layout() -> None:
    assert set(LAYOUTS) == {f.name for f in FAMILIES}
    gfx12 = LAYOUTS["RDNA4"]
    assert gfx12.field_word["round_robin_scheduling"] == "compute_pgm_rsrc1" and "dx10_clamp" not in gfx12.field_word
    assert [b for b in gfx12.words["compute_pgm_rsrc3"] if b.name == "inst_pref_size"] == [Bits("inst_pref_size", 4, 8)]
    assert LAYOUTS["RDNA3"].words["compute_pgm_rsrc3"][1] == Bits("inst_pref_size", 4, 6)
    assert "accum_offset" not in LAYOUTS["RDNA2"].field_word and "tg_split" in LAYOUTS["CDNA3"].field_word


def test_layout_tables_refuse_overlaps() -> None:
    with pytest.raises(ValueError, match="overlap"):
        Layout("bad", {"compute_pgm_rsrc1": (Bits("a", 0, 4), Bits("b", 3))}, False, {64: 4})
    with pytest.raises(ValueError, match="leave the word"):
        Layout("bad", {"kernel_code_properties": (Bits("a", 15, 2),)}, False, {64: 4})


def test_descriptor_decode_checks_size_and_reserved_bytes(parsed) -> None:
    layout = LAYOUTS["CDNA3"]
    with pytest.raises(BadCodeObject, match="63 bytes"):
        KernelDescriptor.decode(bytes(63), layout)
    with pytest.raises(BadCodeObject, match="reserved bytes"):
        KernelDescriptor.decode(bytes(30) + b"\x01" + bytes(33), layout)
    kd = KernelDescriptor.decode(bytes(64), layout)
    assert kd.wave_size == 64 and kd.user_sgprs == () and kd.accum_offset == 4
    with pytest.raises(AttributeError, match="no field 'wavefront_size32'"):
        kd.wavefront_size32  # noqa: B018


# --- the image and its relocations ------------------------------------------------------------------------
LUTS = [p for p in CODE_OBJECTS if p.stem.startswith("lut-")]
PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53]


@pytest.mark.parametrize("path", LUTS, ids=ids(LUTS))
def test_image_relocates_the_pointer_table(path: Path, parsed) -> None:
    """lut.cl's table of pointers to three tables: two hidden (RELATIVE64), one exported (ABS64 on its symbol)."""
    obj = parsed[path.stem]
    relocs = sorted(obj.relocations, key=lambda r: r.offset)
    assert [r.type.name for r in relocs] == ["R_AMDGPU_RELATIVE64"] * 2 + ["R_AMDGPU_ABS64"]
    assert relocs[2].symbol_name == "cubes" and relocs[2].symbol is not None
    a, b = obj.image(BASE_A), obj.image(BASE_B)
    assert len(a) == len(b) == obj.image_size
    changed = {i for i in range(len(a)) if a[i] != b[i]}
    relocated = {r.offset + i for r in relocs for i in range(8)}
    assert changed and changed <= relocated
    for base, image in ((BASE_A, a), (BASE_B, b)):
        ptrs = [struct.unpack_from("<Q", image, r.offset)[0] for r in relocs]
        assert [p - base for p in ptrs] == [(r.symbol or 0) + r.addend for r in relocs]
        tables = [struct.unpack_from(f"<{n}I", image, p - base) for p, n in zip(ptrs, (16, 4, 4), strict=True)]
        assert tables == [tuple(PRIMES), (0, 1, 4, 9), (0, 1, 8, 27)]


@pytest.mark.parametrize("path", CODE_OBJECTS, ids=ids(CODE_OBJECTS))
def test_image_holds_the_segments(path: Path, parsed) -> None:
    obj = parsed[path.stem]
    data = path.read_bytes()
    image = bytearray(obj.image(0))
    for r in obj.relocations:  # compared below with the file, whose relocated places lld leaves 0
        image[r.offset:r.offset + r.type.size] = bytes(r.type.size)
    loads = [s for s in _elf(data).iter_segments() if s["p_type"] == "PT_LOAD"]
    for s in loads:
        vaddr, offset, filesz = s["p_vaddr"], s["p_offset"], s["p_filesz"]
        assert image[vaddr:vaddr + filesz] == data[offset:offset + filesz]
        assert not any(image[vaddr + filesz:vaddr + s["p_memsz"]])
    assert len(image) == max(s["p_vaddr"] + s["p_memsz"] for s in loads)
    for k in obj.kernels.values():
        assert image[k.descriptor_offset:k.descriptor_offset + 64] == _kd_bytes(data, k.descriptor_offset)
    with pytest.raises(ValueError, match="aligned"):
        obj.image(BASE_A + 0x80)


def _kd_bytes(data: bytes, vaddr: int) -> bytes:
    off = _file_offset(_elf(data), vaddr)
    return data[off:off + 64]


@pytest.mark.parametrize("path", LUTS, ids=ids(LUTS))
def test_relocations_match_llvm_readelf(path: Path, parsed) -> None:
    need("llvm-readelf-19")
    out = run("llvm-readelf-19", "-r", path)
    rows = re.findall(r"^([0-9a-f]{16})\s+[0-9a-f]+\s+(R_AMDGPU_\w+)\s+(?:([0-9a-f]+) (\S+) \+ )?([0-9a-f]+)$",
                      out, re.M)
    theirs = sorted((int(o, 16), t, int(v, 16) if v else None, n, int(a, 16)) for o, t, v, n, a in rows)
    mine = sorted((r.offset, r.type.name, r.symbol, r.symbol_name, r.addend) for r in parsed[path.stem].relocations)
    assert mine == theirs and len(rows) == 3


def test_relocation_types_follow_the_abi() -> None:
    """AMDGPUUsage "Relocation Records": S symbol, A addend, P place, B base."""
    s, a, p, b = 0x1_2345_6000, 0x10, 0x1_2345_7000, 0x1_0000_0000
    calc = {t.name: t.value(s, a, p, b) & ((1 << 8 * t.size) - 1 if t.size else 0) for t in RELOCATIONS.values()}
    assert calc == {"R_AMDGPU_NONE": 0, "R_AMDGPU_ABS32_LO": 0x2345_6010, "R_AMDGPU_ABS32_HI": 1,
                    "R_AMDGPU_ABS64": 0x1_2345_6010, "R_AMDGPU_REL32": (-0xFF0) & 0xFFFF_FFFF,
                    "R_AMDGPU_REL64": (-0xFF0) & (1 << 64) - 1, "R_AMDGPU_ABS32": 0x2345_6010,
                    "R_AMDGPU_REL32_LO": (-0xFF0) & 0xFFFF_FFFF, "R_AMDGPU_REL32_HI": 0xFFFF_FFFF,
                    "R_AMDGPU_RELATIVE64": 0x1_0000_0010}
    assert not RELOCATIONS[6].fits(s + a) and RELOCATIONS[4].fits(-0xFF0)


# --- offload bundles --------------------------------------------------------------------------------------
BUNDLE = FIXTURES / f"{build.BUNDLE}.hipfb"


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_bundle_selects_each_target(target: str) -> None:
    data = BUNDLE.read_bytes()
    assert select(data, target) == fixture(f"{build.BUNDLE}-{target}.co")
    obj = load(data, target)
    assert obj.target.name == target and set(obj.kernels) == {"args", "ids"}
    assert select(data, f"{target}:xnack-") == select(data, target)  # entries for "any" fit every setting


def test_bundle_entries_match_clang_offload_bundler() -> None:
    need("clang-offload-bundler-19")
    listed = run("clang-offload-bundler-19", "-list", "-type=o", f"-input={BUNDLE}").split()
    found = entries(BUNDLE.read_bytes())
    assert sorted(e.id for e in found) == sorted(listed)
    assert [str(e.target) for e in found if e.target] == list(TARGET_NAMES)


def test_bundle_without_the_device_lists_its_targets() -> None:
    with pytest.raises(TargetNotInBundle, match=r"^offload bundle has no code object for gfx1101; it holds: "
                                                r"gfx90a, gfx942, gfx1030, gfx1100, gfx1201$"):
        load(BUNDLE.read_bytes(), "gfx1101")


def _bundle(*items: tuple[str, bytes]) -> bytes:
    header = BUNDLE_MAGIC + struct.pack("<Q", len(items))
    size = len(header) + sum(24 + len(i) for i, _ in items)
    table, blobs = b"", b""
    for bundle_id, blob in items:
        table += struct.pack("<QQQ", size + len(blobs), len(blob), len(bundle_id)) + bundle_id.encode()
        blobs += blob
    return header + table + blobs


def test_bundle_feature_preference() -> None:
    """An entry relying on a setting the device does not state loses to one for "any"; stated settings win."""
    data = _bundle(("host-x86_64-unknown-linux-gnu-", b""), ("hipv4-amdgcn-amd-amdhsa--gfx90a:xnack+", b"ON"),
                   ("hip-amdgcn-amd-amdhsa--gfx90a", b"ANY"), ("hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-", b"OFF"))
    assert select(data, "gfx90a") == b"ANY"
    assert select(data, "gfx90a:xnack+") == b"ON"
    assert select(data, "gfx90a:xnack-") == b"OFF"
    only_on = _bundle(("hipv4-amdgcn-amd-amdhsa--gfx90a:xnack+", b"ON"))
    with pytest.raises(TargetNotInBundle, match="holds: gfx90a:xnack\\+$"):
        select(only_on, "gfx90a:xnack-")
    assert TargetId.parse("gfx90a:xnack+:sramecc-").fits(TargetId.parse("GFX90A:sramecc-"))


@pytest.mark.parametrize("cut", [10, 24, 30, 40, 60, 100, 400, 6000])
def test_truncated_bundle(cut: int) -> None:
    with pytest.raises(BadCodeObject, match="offload bundle"):
        select(BUNDLE.read_bytes()[:cut], "gfx942")


def test_compressed_bundle_is_named() -> None:
    with pytest.raises(BadCodeObject, match="compressed offload bundle"):
        load(b"CCOB" + bytes(60), "gfx942")


# --- bad files --------------------------------------------------------------------------------------------
GOOD = "lut-gfx942.co"


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _note(data: bytes) -> tuple[int, int, int]:
    """(file offset of the note header, of its type field, of its desc) of the metadata note."""
    for seg in _elf(data).iter_segments():
        if seg["p_type"] == "PT_NOTE":
            note = next(seg.iter_notes())
            start = note["n_offset"]
            return start, start + 8, start + 12 + ((note["n_namesz"] + 3) & ~3)
    raise AssertionError("no note")


def _note_desc(data: bytes) -> bytes:
    _, _, desc = _note(data)
    size = struct.unpack_from("<I", data, _note(data)[0] + 4)[0]
    return data[desc:desc + size]


def _replace_note(data: bytes, payload: bytes) -> bytes:
    """The metadata note's payload replaced by a shorter or equal one, in place (its descsz shrunk)."""
    start, _, desc = _note(data)
    old = struct.unpack_from("<I", data, start + 4)[0]
    assert len(payload) <= old, "the new metadata must not be longer"
    out = bytearray(data)
    struct.pack_into("<I", out, start + 4, len(payload))
    out[desc:desc + old] = payload + bytes(old - len(payload))
    return bytes(out)


TRUNCATIONS = [0, 3, 40, 64, 100, 300, 0x600, 0x1000, -64, -1]


@pytest.mark.parametrize("cut", TRUNCATIONS)
def test_truncated(cut: int) -> None:
    with pytest.raises(BadCodeObject, match=r"^truncated: the (ELF header|program header table|section header "
                                            r"table|PT_LOAD segment \d) needs \d+ bytes, the file has \d+$"):
        CodeObject.parse(fixture(GOOD)[:cut])


BAD = [
    ("flipped magic", lambda d: b"\x7fELG" + d[4:], BadCodeObject, r"^not an ELF file \(starts b'\\x7fELG'"),
    ("x86-64 machine", lambda d: _patch(d, 18, "<H", 62), BadCodeObject,
     r"^not an AMDGPU code object: ELF e_machine is 62, AMDGPU is 224$"),
    ("PAL OS/ABI", lambda d: _patch(d, 7, "B", 65), BadCodeObject, "not an AMDHSA code object"),
    ("code object v3", lambda d: _patch(d, 8, "B", 1), BadCodeObject, r"ABI version 1 \(code object v3\)"),
    ("relocatable", lambda d: _patch(d, 16, "<H", 1), BadCodeObject, "ld.lld -shared"),
    ("32-bit", lambda d: _patch(d, 4, "B", 1), BadCodeObject, "64-bit little-endian"),
    ("no program headers", lambda d: _patch(d, 56, "<H", 0), BadCodeObject, "no usable program headers"),
    ("missing note", lambda d: _patch(d, _note(d)[1], "<I", 33), MissingMetadata,
     r"^no NT_AMDGPU_METADATA note"),
    ("metadata not msgpack", lambda d: _patch(d, _note(d)[2], "B", 0xC1), BadMetadata, "not valid msgpack"),
    ("metadata an array", lambda d: _replace_note(d, msgpack.packb([1, 2])), BadMetadata, "holds a list, not a map"),
    ("wavefront size a bool", lambda d: _replace_note(d, _edit(d, ".wavefront_size", True)), BadMetadata,
     r"^metadata of kernel 'lut': \.wavefront_size is True, not a non-negative integer$"),
    ("kernels a string", lambda d: _replace_note(d, _edit_doc(d, "amdhsa.kernels", "lut")), BadMetadata,
     "amdhsa.kernels is 'lut', not a list"),
    ("argument past kernarg", lambda d: _replace_note(d, _edit_arg(d, 0, ".offset", 400)), BadMetadata,
     r"argument 0: bytes 400..407 run past \.kernarg_segment_size"),
    ("unknown value kind", lambda d: _replace_note(d, _edit_arg(d, 1, ".value_kind", "by_ref")), BadMetadata,
     "unknown .value_kind 'by_ref'"),
    ("metadata disagrees", lambda d: _replace_note(d, _edit(d, ".kernarg_segment_size", 300)), BadMetadata,
     r"metadata \.kernarg_segment_size is 300, its descriptor says"),
    ("no descriptor symbol", lambda d: _replace_note(d, _edit(d, ".symbol", "lot.kd")), BadCodeObject,
     "no symbol 'lot.kd'"),
    ("descriptor reserved", lambda d: _patch(d, _kd_file(d) + 30, "B", 1), BadCodeObject, "reserved bytes"),
    ("entry misaligned", lambda d: _patch(d, _kd_file(d) + 16, "<q", 0x1184), BadCodeObject,
     "entry point .* is not a 256-byte aligned address in an executable segment"),
    ("code symbol too big", lambda d: _patch(d, _symbol(d, "lut") + 16, "<Q", 1 << 62), BadCodeObject,
     r"kernel 'lut': its code symbol claims 0x4000000000000000 bytes .* past the executable segment"),
    ("GOT relocation", lambda d: _patch(d, _rela(d) + 8, "<Q", 7), BadCodeObject, r"type 7 \(R_AMDGPU_GOTPCREL\)"),
    ("relocation outside", lambda d: _patch(d, _rela(d), "<Q", 0x10_0000), BadCodeObject,
     "outside the loaded segments"),
    ("huge segment", lambda d: _patch(d, 64 + 56 + 40, "<Q", 1 << 40), BadCodeObject, "limited to 256 MiB"),
    ("huge alignment", lambda d: _patch(d, 64 + 56 + 48, "<Q", 1 << 63), BadCodeObject, "alignments to 2 MiB"),
]


def _kd_file(data: bytes) -> int:
    return _file_offset(_elf(data), CodeObject.parse(fixture(GOOD)).kernel("lut").descriptor_offset)


def _elf(data: bytes) -> ELFFile:
    return ELFFile(io.BytesIO(data))


def _symbol(data: bytes, name: str) -> int:
    """The file offset of the dynamic symbol `name` (st_size is 16 bytes into it)."""
    table = _elf(data).get_section_by_name(".dynsym")
    index = next(i for i, sym in enumerate(table.iter_symbols()) if sym.name == name)
    return table["sh_offset"] + index * table["sh_entsize"]


def _rela(data: bytes) -> int:
    return _elf(data).get_section_by_name(".rela.dyn")["sh_offset"]


def _doc(data: bytes) -> dict:
    """The fixture's metadata, less .language_version (room in the note for a longer edit)."""
    doc = msgpack.unpackb(_note_desc(data))
    del doc["amdhsa.kernels"][0][".language_version"]
    return doc


def _edit_doc(data: bytes, key: str, value: object) -> bytes:
    doc = _doc(data)
    doc[key] = value
    return msgpack.packb(doc)


def _edit(data: bytes, key: str, value: object) -> bytes:
    doc = _doc(data)
    doc["amdhsa.kernels"][0][key] = value
    return msgpack.packb(doc)


def _edit_arg(data: bytes, index: int, key: str, value: object) -> bytes:
    doc = _doc(data)
    doc["amdhsa.kernels"][0][".args"][index][key] = value
    return msgpack.packb(doc)


@pytest.mark.parametrize(("what", "mutate", "error", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_file(what: str, mutate, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        CodeObject.parse(mutate(fixture(GOOD)))
    assert "\n" not in str(caught.value)


def test_bundle_is_not_one_code_object() -> None:
    with pytest.raises(BadCodeObject, match="offload bundle, not one code object"):
        CodeObject.parse(BUNDLE.read_bytes())


def test_unknown_kernel_names_the_kernels(parsed) -> None:
    with pytest.raises(UnknownKernel, match=r"^code object for gfx1201 has no kernel 'idz'; it has: args, ids$"):
        parsed["args-gfx1201"].kernel("idz")


def test_metadata_parser_unit() -> None:
    """Types checked key by key (the file-level cases above cover the note around it)."""
    ok = msgpack.unpackb(_note_desc(fixture(GOOD)))
    assert parse_metadata(msgpack.packb(ok)).kernels[0].name == "lut"
    for key, value, message in ((".sgpr_count", -1, "not a non-negative integer"),
                                (".kernarg_segment_align", 12, "not a power of two"),
                                (".wavefront_size", 48, "neither 32 nor 64"),
                                (".reqd_workgroup_size", [1, 2], "not 3 non-negative integers"),
                                (".uses_dynamic_stack", 2, "not a boolean"),
                                (".args", {"a": 1}, "not a list")):
        bad = msgpack.unpackb(msgpack.packb(ok))
        bad["amdhsa.kernels"][0][key] = value
        with pytest.raises(BadMetadata, match=message):
            parse_metadata(msgpack.packb(bad))
    with pytest.raises(BadMetadata, match="appears twice"):
        parse_metadata(msgpack.packb({**ok, "amdhsa.kernels": ok["amdhsa.kernels"] * 2}))
    with pytest.raises(BadMetadata, match="not 1.x"):
        parse_metadata(msgpack.packb({**ok, "amdhsa.version": [2, 0]}))


# --- mutation: never anything but a parse or a CodeObjectError ----------------------------------------------
MUTATED = [FIXTURES / n for n in ("lut-gfx942.co", "args-gfx1030.co", "scratch-gfx90a.co", "dynlds-gfx1201.co",
                                  "lut-gfx942-v4.co")]


def _mutations(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4))):
        if not out:
            break
        # Most mutations hit the headers, note, symbols, relocations and descriptors (the first 0x900 bytes) or
        # the section header table at the end; some hit anywhere.
        where = rng.random()
        if where < 0.6:
            pos = rng.randrange(min(0x900, len(out)))
        elif where < 0.8:
            pos = rng.randrange(max(0, len(out) - 0x400), len(out))
        else:
            pos = rng.randrange(len(out))
        how = rng.random()
        if how < 0.5:
            out[pos] ^= 1 << rng.randrange(8)
        elif how < 0.8:
            out[pos] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif how < 0.9:
            width = rng.choice((2, 4, 8))
            out[pos:pos + width] = rng.choice((b"\xff", b"\x00", b"\x80")) * width
        else:
            del out[rng.randrange(len(out)):]
    return bytes(out)


@pytest.mark.parametrize("path", MUTATED, ids=ids(MUTATED))
def test_mutated_code_objects_parse_or_raise_code_object_error(path: Path) -> None:
    rng = random.Random(f"code-object-{path.name}")
    data = path.read_bytes()
    outcomes = {"parsed": 0, "refused": 0}
    for i in range(400):
        mutated = _mutations(data, rng)
        try:
            obj = CodeObject.parse(mutated)
            for k in obj.kernels.values():
                assert k.descriptor.wave_size in (32, 64) and k.entry_offset < obj.image_size
                k.descriptor.user_sgprs  # noqa: B018
            obj.image(0x7F00_0000_0000)
            outcomes["parsed"] += 1
        except CodeObjectError as e:
            assert "\n" not in str(e) and str(e), f"mutation {i}: {e!r}"
            outcomes["refused"] += 1
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"mutation {i} of {path.name} raised {type(e).__name__}: {e}")
    assert outcomes["parsed"] and outcomes["refused"], outcomes


# Section and program header fields: (name, offset in the entry, struct format).
SHDR_FIELDS = (("sh_name", 0, "I"), ("sh_type", 4, "I"), ("sh_flags", 8, "Q"), ("sh_addr", 16, "Q"),
               ("sh_offset", 24, "Q"), ("sh_size", 32, "Q"), ("sh_link", 40, "I"), ("sh_info", 44, "I"),
               ("sh_addralign", 48, "Q"), ("sh_entsize", 56, "Q"))
PHDR_FIELDS = (("p_type", 0, "I"), ("p_flags", 4, "I"), ("p_offset", 8, "Q"), ("p_vaddr", 16, "Q"),
               ("p_paddr", 24, "Q"), ("p_filesz", 32, "Q"), ("p_memsz", 40, "Q"), ("p_align", 48, "Q"))
BOUNDARY = (0, 1, 2, 3, 4, 6, 9, 11, 13, 0x18, 0x40, 0x1000, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 40, 1 << 63, (1 << 64) - 1)


@pytest.mark.parametrize("path", MUTATED[:3], ids=ids(MUTATED[:3]))
def test_header_fields_at_boundary_values(path: Path) -> None:
    """Every field of every section and program header set to small indices, sizes and extremes (a seeded
    sample): a parse or a CodeObjectError, never another exception."""
    data = path.read_bytes()
    phoff, shoff = struct.unpack_from("<QQ", data, 32)
    phnum, shnum = struct.unpack_from("<H", data, 56)[0], struct.unpack_from("<H", data, 60)[0]
    cases = [(shoff + i * 64 + off, fmt, v) for i in range(shnum) for _, off, fmt in SHDR_FIELDS for v in BOUNDARY]
    cases += [(phoff + i * 56 + off, fmt, v) for i in range(phnum) for _, off, fmt in PHDR_FIELDS for v in BOUNDARY]
    for pos, fmt, value in random.Random(f"fields-{path.name}").sample(cases, 500):
        mutated = _patch(data, pos, "<" + fmt, value & (0xFFFF_FFFF if fmt == "I" else (1 << 64) - 1))
        try:
            CodeObject.parse(mutated).image(0x7F00_0000_0000)
        except CodeObjectError as e:
            assert "\n" not in str(e)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{value:#x} at byte {pos:#x} of {path.name} raised {type(e).__name__}: {e}")


def test_mutated_bundles_select_or_raise_code_object_error() -> None:
    rng = random.Random("bundle")
    data = BUNDLE.read_bytes()
    for i in range(300):
        out = bytearray(data)
        for _ in range(rng.choice((1, 2))):
            pos = rng.randrange(300) if rng.random() < 0.8 else rng.randrange(len(out))
            out[pos] ^= 1 << rng.randrange(8)
        try:
            load(bytes(out), rng.choice(TARGET_NAMES))
        except CodeObjectError:
            pass
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"bundle mutation {i} raised {type(e).__name__}: {e}")
