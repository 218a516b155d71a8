"""The kernel corpus: sources, the committed code objects and bundle, and the numpy reference table.

The code objects are read here with pyelftools and msgpack directly (the project's loader is not used), so a
fault in the corpus is not hidden by a fault in the loader or the other way round.
"""

from __future__ import annotations

import io
import re
import shutil
import struct

import msgpack
import numpy as np
import pytest
from elftools.elf.elffile import ELFFile

from kfdtrace.driver.kernels import build
from kfdtrace.driver.kernels.host import CLANG, HostCorpus, build_host
from kfdtrace.driver.kernels.reference import CASES, Buffer, CaseMismatch, Local, Scalar, case, sized

NT_AMDGPU_METADATA = 32
ELFOSABI_AMDGPU_HSA = 64
ELFABIVERSION_AMDGPU_HSA_V5 = 3
# EF_AMDGPU_MACH values (LLVM BinaryFormat/ELF.h; llvm-readelf-19 -h names them so for the committed objects)
MACH = {"gfx90a": 0x3F, "gfx942": 0x4C, "gfx1030": 0x36, "gfx1100": 0x41, "gfx1201": 0x4E}
BUNDLE_MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"
KERNEL_DECL = re.compile(r"__kernel\s+(?:__attribute__\s*\(\(.*?\)\)\s*)?void\s+(\w+)\s*\(", re.S)


def _object(target: str) -> bytes:
    return build.object_path(target).read_bytes()


def _metadata(data: bytes) -> dict:
    """The msgpack map of the object's NT_AMDGPU_METADATA note."""
    elf = ELFFile(io.BytesIO(data))
    for section in elf.iter_sections():
        if section["sh_type"] != "SHT_NOTE":
            continue
        raw, pos = section.data(), 0
        while pos + 12 <= len(raw):
            namesz, descsz, ntype = struct.unpack_from("<3I", raw, pos)
            name = raw[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            desc_at = pos + 12 + (namesz + 3) // 4 * 4
            if name == b"AMDGPU" and ntype == NT_AMDGPU_METADATA:
                return msgpack.unpackb(raw[desc_at:desc_at + descsz])
            pos = desc_at + (descsz + 3) // 4 * 4
    raise AssertionError("no NT_AMDGPU_METADATA note")


def _symbols(data: bytes) -> dict[str, tuple[str, int, str]]:
    """name -> (type, size, section name) over .symtab and .dynsym."""
    elf = ELFFile(io.BytesIO(data))
    found = {}
    for section in elf.iter_sections():
        if section["sh_type"] not in ("SHT_SYMTAB", "SHT_DYNSYM"):
            continue
        for sym in section.iter_symbols():
            shndx = sym["st_shndx"]
            where = elf.get_section(shndx).name if isinstance(shndx, int) and shndx else ""
            found[sym.name] = (sym["st_info"]["type"], sym["st_size"], where)
    return found


@pytest.fixture(scope="module")
def metadata() -> dict[str, dict]:
    return {t: _metadata(_object(t)) for t in build.TARGETS}


def _kernels(meta: dict) -> dict[str, dict]:
    return {k[".name"]: k for k in meta["amdhsa.kernels"]}


# -- sources and table -------------------------------------------------------------------------------------
def test_sources_and_table_agree():
    declared = {}
    for src in build.sources():
        for name in KERNEL_DECL.findall(src.read_text()):
            assert name not in declared, f"kernel {name} in both {declared.get(name)} and {src.stem}"
            declared[name] = src.stem
    assert len(declared) >= 30
    assert {c.kernel: c.source for c in CASES} == declared
    assert len({c.kernel for c in CASES}) == len(CASES)


def test_case_lookup_names_the_kernels():
    assert case("saxpy").kernel == "saxpy"
    with pytest.raises(KeyError, match="no corpus kernel 'nope'.*saxpy"):
        case("nope")


# -- code objects ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", build.TARGETS)
def test_object_is_v5_for_its_target(target, metadata):
    data = _object(target)
    elf = ELFFile(io.BytesIO(data))
    assert elf["e_machine"] == "EM_AMDGPU"
    assert (data[7], data[8]) == (ELFOSABI_AMDGPU_HSA, ELFABIVERSION_AMDGPU_HSA_V5)  # pyelftools misnames 64
    assert elf["e_flags"] & 0xFF == MACH[target]
    assert metadata[target]["amdhsa.target"] == f"amdgcn-amd-amdhsa--{target}"
    assert metadata[target]["amdhsa.version"] == [1, 2]


@pytest.mark.parametrize("target", build.TARGETS)
def test_every_kernel_is_in_every_object(target, metadata):
    kernels = _kernels(metadata[target])
    assert set(kernels) == {c.kernel for c in CASES}
    symbols = _symbols(_object(target))
    for c in CASES:
        assert symbols[c.kernel][0] == "STT_FUNC", c.kernel
        assert symbols[f"{c.kernel}.kd"][:2] == ("STT_OBJECT", 64), c.kernel
        assert kernels[c.kernel][".symbol"] == f"{c.kernel}.kd"


@pytest.mark.parametrize("target", build.TARGETS)
def test_table_arguments_match_the_metadata(target, metadata):
    kernels = _kernels(metadata[target])
    for c in CASES:
        explicit = [a for a in kernels[c.kernel][".args"] if not a[".value_kind"].startswith("hidden_")]
        assert [a[".name"] for a in explicit] == [a.name for a in c.args], c.kernel
        for arg, meta in zip(c.args, explicit, strict=True):
            where = f"{c.kernel}.{arg.name}"
            if isinstance(arg, Buffer):
                assert (meta[".value_kind"], meta[".address_space"]) == ("global_buffer", "global"), where
                assert meta[".type_name"] == f"{arg.ctype}*", where
            elif isinstance(arg, Scalar):
                assert meta[".value_kind"] == "by_value", where
                assert (meta[".type_name"], meta[".size"]) == (arg.ctype, np.dtype(arg.dtype).itemsize), where
            else:
                assert isinstance(arg, Local) and arg.nbytes > 0, where
                assert meta[".value_kind"] == "dynamic_shared_pointer", where


@pytest.mark.parametrize("target", build.TARGETS)
def test_grids_fit_the_kernels(target, metadata):
    kernels = _kernels(metadata[target])
    for c in CASES:
        k = kernels[c.kernel]
        assert 1 <= len(c.grid) == len(c.block) <= 3, c.kernel
        assert np.prod(c.block) <= k[".max_flat_workgroup_size"], c.kernel
        if ".reqd_workgroup_size" in k:  # LDS tiles sized for whole groups: the grid is rounded up
            assert k[".reqd_workgroup_size"] == [*c.block, 1, 1][:3], c.kernel
            assert not c.partial, c.kernel
    assert any(c.partial for c in CASES) and any(len(c.grid) == 3 and c.partial for c in CASES)


@pytest.mark.parametrize("target", build.TARGETS)
def test_scratch_lds_and_rodata_kernels_are_what_they_claim(target, metadata):
    kernels = _kernels(metadata[target])
    scratch = {n for n, k in kernels.items() if k[".private_segment_fixed_size"]}
    assert scratch == {"mode_scratch"}
    assert kernels["gemm_tiled"][".group_segment_fixed_size"] == 2 * 16 * 16 * 4
    assert kernels["reduce_max_dynamic"][".group_segment_fixed_size"] == 0
    hidden = {a[".value_kind"]: a[".offset"] for a in kernels["grid_info"][".args"]
              if a[".value_kind"].startswith("hidden_")}
    base = min(hidden.values())  # prelude.h reads these offsets from the hidden block's start
    assert {k: hidden[k] - base for k in ("hidden_block_count_x", "hidden_block_count_z", "hidden_group_size_x",
                                          "hidden_group_size_z", "hidden_remainder_x", "hidden_remainder_z",
                                          "hidden_grid_dims")} == {
        "hidden_block_count_x": 0, "hidden_block_count_z": 8, "hidden_group_size_x": 12, "hidden_group_size_z": 16,
        "hidden_remainder_x": 18, "hidden_remainder_z": 22, "hidden_grid_dims": 64}
    table = _symbols(_object(target))["crc32_table"]
    assert table == ("STT_OBJECT", 1024, ".rodata")


def _bundle_entries(data: bytes) -> list[tuple[str, int, int]]:
    """(entry id, offset, size) of a clang offload bundle."""
    assert data[:24] == BUNDLE_MAGIC
    (count,), pos, entries = struct.unpack_from("<Q", data, 24), 32, []
    for _ in range(count):
        offset, size, id_len = struct.unpack_from("<3Q", data, pos)
        entries.append((data[pos + 24:pos + 24 + id_len].decode(), offset, size))
        pos += 24 + id_len
    return entries


def test_bundle_holds_the_five_objects():
    data = (build.BUILT / build.BUNDLE).read_bytes()
    entries = _bundle_entries(data)
    assert [e[0] for e in entries] == [f"{build.HOST_ENTRY}-", *map(build.bundle_entry_id, build.TARGETS)]
    assert entries[0][2] == 0  # the empty host entry
    for (_, offset, size), target in zip(entries[1:], build.TARGETS, strict=True):
        assert offset % build.BUNDLE_ALIGN == 0
        assert data[offset:offset + size] == _object(target)


def _tools_or_skip() -> None:
    for tool in build.TOOLS.values():
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


def test_rebuild_gives_the_committed_bytes(tmp_path):
    _tools_or_skip()
    recorded = (build.BUILT / "BUILD.txt").read_text().strip()
    if build.compiler_version() != recorded:
        pytest.skip(f"the objects were built by {recorded!r}, not {build.compiler_version()!r}")
    written = build.build(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in build.BUILT.iterdir() if p.suffix != ".txt")
    for path in written:
        assert path.read_bytes() == (build.BUILT / path.name).read_bytes(), f"{path.name} differs from the sources"


# What the issue asks the corpus to exercise, as the mnemonics that show it on every target (names differ by
# family: gfx9/10 global_atomic_smin is gfx11/12 global_atomic_min_i32, s_ff1_i32_b64 is s_ctz_i32_b32, ...).
ISA_FEATURES = {
    "barrier": r"s_barrier(_signal)?$",
    "cross-lane permute": r"ds_bpermute_b32$",
    "LDS atomics": r"ds_(add|sub|min|max|and|or|xor|inc|dec)_[iub]32$",
    "LDS atomics returning": r"ds_(cmpst|cmpstore)_rtn_b32$",
    "LDS exchange": r"ds_(wrxchg|storexchg)_rtn_b32$",
    **{f"global atomic {k}": rf"global_atomic_{k}(_[iub]32)?$"
       for k in ("add", "sub", "swap", "cmpswap", "and", "or", "xor", "inc", "dec")},
    "global atomic smin": r"global_atomic_(smin|min_i32)$",
    "global atomic smax": r"global_atomic_(smax|max_i32)$",
    "global atomic umin": r"global_atomic_(umin|min_u32)$",
    "global atomic umax": r"global_atomic_(umax|max_u32)$",
    "64-bit atomics": r"global_atomic_(add_x2|add_u64)$",
    "atomic optimizer loop": r"v_readlane_b32$",
    "lane count": r"v_mbcnt_lo_u32_b32$",
    "find first lane": r"s_(ff1_i32_b(32|64)|ctz_i32_b32)$",
    "scratch": r"(scratch_store_(dword|b32)|buffer_store_dword)$",
    "flat addressing": r"flat_(load_dword|load_b32)$",
    "flat atomics": r"flat_atomic_add(_u32)?$",
    "f32 division": r"v_div_scale_f32$",
    "f64 division": r"v_div_scale_f64$",
    "exp": r"v_exp_f32",
    "sqrt": r"v_sqrt_f32",
    "f16": r"v_mul_f16",
    "end": r"s_endpgm$",
}


@pytest.mark.parametrize("target", build.TARGETS)
def test_corpus_exercises_what_the_issue_lists(target):
    _tools_or_skip()
    found = build.mnemonics(build.object_path(target))
    assert len(found) >= 150
    missing = [f for f, pattern in ISA_FEATURES.items() if not any(re.match(pattern, m) for m in found)]
    assert not missing, f"{target}: no instruction for {missing}"
    assert "s_getpc_b64" in build.mnemonics(build.object_path(target), "crc32_rows")  # .rodata, PC-relative
    # campaign 70: a private array indexed at run time lives in VGPRs moved through M0 on RDNA; sqrt(fabs(x))
    # selects |x| with v_cndmask's abs input modifier everywhere
    if target in build.WAVE64_TARGETS:
        assert "v_movreld_b32_e32" in build.mnemonics(build.object_path(target), "indexed_private")
    text = build._run([build._tool("objdump"), "-d", "--disassemble-symbols=root_of_magnitude",
                       str(build.object_path(target))])
    assert re.search(r"v_cndmask_b32_e64 v\d+, \|v\d+\|", text)


# -- reference table ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", CASES, ids=lambda c: c.kernel)
def test_reference_runs_and_gives_the_documented_outputs(c):
    values = c.inputs()
    expected = c.expected(values)
    outputs = {b.name: b for b in c.outputs}
    assert set(expected) <= set(outputs), c.kernel
    for name, array in expected.items():
        assert (array.dtype, array.shape) == (np.dtype(outputs[name].dtype), outputs[name].shape), name
    assert c.check is not None or set(expected) == set(outputs), "an output neither compared nor checked"
    for a in c.args:  # inputs match their declarations and are not changed by the reference
        if isinstance(a, Buffer):
            assert (values[a.name].dtype, values[a.name].shape) == (np.dtype(a.dtype), a.shape)
    assert all(np.array_equal(values[k], v, equal_nan=True) for k, v in c.inputs().items() if isinstance(v, np.ndarray))


def test_benchmarks_can_size_some_kernels():
    big = sized("gemm_tiled", m=256, n=256, k=256)
    assert (big.grid, big.block) == ((256, 256), (16, 16))
    assert [a.shape for a in big.args if isinstance(a, Buffer)] == [(256, 256)] * 3
    assert sized("vector_add", n=1 << 24).grid == (1 << 24,)
    again, table = sized("memcpy_uint4"), case("memcpy_uint4")  # the default size is the table's
    assert (again.grid, again.block) == (table.grid, table.block)
    assert all(np.array_equal(again.inputs()[k], v) for k, v in table.inputs().items())
    with pytest.raises(KeyError, match="'saxpy' has one size only"):
        sized("saxpy", n=5)


def test_inputs_are_seeded():
    c = case("vector_add")
    assert np.array_equal(c.inputs()["a"], c.inputs()["a"])
    assert not np.array_equal(c.inputs(seed=1)["a"], c.inputs()["a"])
    assert not np.array_equal(c.inputs()["a"], c.inputs()["b"])


@pytest.mark.parametrize("kernel, output, at", [("add_int", "c", 17), ("gemm_tiled", "C", (3, 5)),
                                                ("mul_f16", "out", 999)])
def test_verify_names_the_first_difference(kernel, output, at):
    c = case(kernel)
    values = c.inputs()
    outputs = c.expected(values)
    c.verify(values, outputs)
    outputs[output][at] += 1
    with pytest.raises(CaseMismatch, match=rf"^{kernel}: {output}\[.*\] = .*expected .*1 of \d+ differ"):
        c.verify(values, outputs)


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> HostCorpus:
    if shutil.which(CLANG) is None:
        pytest.skip(f"{CLANG} not installed")
    return HostCorpus(build_host(tmp_path_factory.mktemp("host")))


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.kernel)
def test_kernel_compiled_for_the_host_agrees_with_its_reference(c, host):
    values = c.inputs()
    outputs = host.run(c, values)
    assert set(outputs) == {b.name for b in c.outputs}
    c.verify(values, outputs)


def _serial(kernel: str, seed: int) -> tuple[dict, dict]:
    """Run an order-dependent atomics kernel's work-items one at a time in a shuffled order."""
    c = case(kernel)
    v = c.inputs()
    out = {b.name: v[b.name].copy() for b in c.outputs}
    n = c.grid[0]
    for i in np.random.default_rng(seed).permutation(n):
        if kernel == "atomic_xchg_slots":
            s = i % len(out["slots"])
            out["old"][i], out["slots"][s] = out["slots"][s], i + 1
        elif kernel == "atomic_cmpxchg_claim":
            k = v["key"][i]
            out["won"][i] = out["owner"][k] == -1
            out["owner"][k] = i if out["owner"][k] == -1 else out["owner"][k]
        else:
            out["tickets"][i] = out["counter"][0]
            out["counter"][0] += 1
    return v, out


@pytest.mark.parametrize("kernel", ["atomic_xchg_slots", "atomic_cmpxchg_claim", "atomic_ticket"])
def test_order_dependent_kernels_are_checked_by_properties(kernel):
    c = case(kernel)
    for seed in range(3):
        c.verify(*_serial(kernel, seed))
    values, out = _serial(kernel, 0)
    broken = next(b.name for b in c.outputs if b.shape != (1,))
    out[broken][0] = out[broken][1]  # a lost update
    with pytest.raises(CaseMismatch, match=f"^{kernel}: "):
        c.verify(values, out)
