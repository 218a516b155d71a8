"""Check kfdtrace.driver.kfd_ioctl against the kernel's kfd_ioctl.h, compiled with gcc.

The headers are the installed /usr/include/linux/kfd_ioctl.h (linux-libc-dev) and any more copies
KFDTRACE_KFD_IOCTL_H names (os.pathsep between them): `.ci/run` adds the newest Debian kernel's. Request
codes come from running a small C program; struct layouts come from the DWARF of the same program
(pyelftools), recursing into nested structs, unions and arrays.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from elftools.elf.elffile import ELFFile

from kfdtrace.driver import kfd_ioctl as k

HEADER = Path("/usr/include/linux/kfd_ioctl.h")
HEADERS = [HEADER, *(Path(p) for p in os.environ.get("KFDTRACE_KFD_IOCTL_H", "").split(os.pathsep) if p)]
INSTALL_HINT = "install them with `apt-get install gcc linux-libc-dev`"

# ROCm-only extensions (nr >= 0x80) of libhsakmt/DKMS copies of the header: deliberately not modelled.
ROCM_ONLY_FIRST_NR = 0x80
ROCM_ONLY_STRUCTS = {
    "kfd_ioctl_dbg_trap_args_deprecated",
    "kfd_ioctl_ipc_export_handle_args",
    "kfd_ioctl_ipc_import_handle_args",
    "kfd_ioctl_cross_memory_copy_deprecated_args",
    "kfd_ioctl_spm_args",
    "kfd_pc_sample_info",
    "kfd_ioctl_pc_sample_args",
    "kfd_ioctl_pmc_settings",
    "kfd_ioctl_profiler_args",
}

Layout = dict[str, tuple[int, int]]  # member path -> (offset, size); "" is the whole struct


@dataclass
class HeaderFacts:
    path: Path
    version: tuple[int, int]
    requests: dict[str, int]  # AMDKFD_IOC_<NAME> without prefix -> request code
    arg_structs: dict[str, str]  # ioctl name -> argument struct name
    layouts: dict[str, Layout]  # struct name -> layout


# --------------------------------------------------------------------------------------------------------
# Reading the header with gcc


def dwarf_layouts(binary: Path, names: set[str]) -> dict[str, Layout]:
    """Layouts of the named top-level structs, read from DWARF."""
    with binary.open("rb") as f:
        dwarf = ELFFile(f).get_dwarf_info()
        found: dict[str, Layout] = {}
        for cu in dwarf.iter_CUs():
            for die in cu.get_top_DIE().iter_children():
                name = _name(die)
                if die.tag == "DW_TAG_structure_type" and name in names and die.has_children:
                    layout: Layout = {"": (0, _type_size(die))}
                    _walk_die(die, "", 0, layout)
                    found[name] = layout
        return found


def _name(die) -> str | None:
    attr = die.attributes.get("DW_AT_name")
    return attr.value.decode() if attr else None


def _strip(die):
    """Follow typedefs and qualifiers to the underlying type DIE."""
    while die.tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type"):
        die = die.get_DIE_from_attribute("DW_AT_type")
    return die


def _array_count(die) -> int:
    count = 1
    for sub in die.iter_children():
        if sub.tag != "DW_TAG_subrange_type":
            continue
        if "DW_AT_count" in sub.attributes:
            count *= sub.attributes["DW_AT_count"].value
        elif "DW_AT_upper_bound" in sub.attributes:
            count *= sub.attributes["DW_AT_upper_bound"].value + 1
        else:
            return 0  # flexible array member
    return count


def _type_size(die) -> int:
    die = _strip(die)
    if die.tag == "DW_TAG_array_type":
        return _type_size(die.get_DIE_from_attribute("DW_AT_type")) * _array_count(die)
    return die.attributes["DW_AT_byte_size"].value


def _walk_die(die, prefix: str, base: int, out: Layout) -> None:
    """Record every member of a struct/union DIE (anonymous members are flattened)."""
    for member in die.iter_children():
        if member.tag != "DW_TAG_member":
            continue
        loc = member.attributes.get("DW_AT_data_member_location")
        offset = base + (loc.value if loc else 0)
        mtype = member.get_DIE_from_attribute("DW_AT_type")
        name = _name(member)
        path = prefix + name if name else prefix.rstrip(".")
        if name:
            out[path] = (offset, _type_size(mtype))
        _walk_type(mtype, path, offset, out)


def _walk_type(type_die, path: str, offset: int, out: Layout) -> None:
    type_die = _strip(type_die)
    prefix = f"{path}." if path else ""
    if type_die.tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
        _walk_die(type_die, prefix, offset, out)
    elif type_die.tag == "DW_TAG_array_type":
        elem = type_die.get_DIE_from_attribute("DW_AT_type")
        out[f"{path}[0]"] = (offset, _type_size(elem))
        _walk_type(elem, f"{path}[0]", offset, out)


def _read_header(path: Path, tmp: Path) -> HeaderFacts:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail(f"gcc not found: the KFD ABI check needs gcc and the kernel headers; {INSTALL_HINT}")
    if not path.is_file():
        pytest.fail(f"{path} not found: the KFD ABI check needs the kernel headers; {INSTALL_HINT}")
    text = path.read_text()
    flat = re.sub(r"\\\n", " ", text)  # join macro continuation lines
    requests = re.findall(r"^#define\s+AMDKFD_IOC_(\w+)\s", flat, re.M)
    arg_structs = dict(
        re.findall(r"^#define\s+AMDKFD_IOC_(\w+)\s+AMDKFD_IOW?R?\(\s*\w+\s*,\s*struct\s+(\w+)", flat, re.M)
    )
    structs = sorted(set(re.findall(r"\bstruct\s+(kfd_\w+)\s*\{", text)))

    # Debian's header includes <drm/drm.h>, which is not installed: a stub giving the __u* types will do.
    (tmp / "inc" / "drm").mkdir(parents=True)
    (tmp / "inc" / "drm" / "drm.h").write_text("#include <linux/types.h>\n")
    src = ["#include <stdio.h>", f'#include "{path.resolve()}"']
    src += [f"struct {s} kfdtrace_v_{s};" for s in structs]
    src += [
        "int main(void) {",
        r'printf("VERSION %d %d\n", KFD_IOCTL_MAJOR_VERSION, KFD_IOCTL_MINOR_VERSION);',
    ]
    src += [rf'printf("IOC {n} %lu\n", (unsigned long)AMDKFD_IOC_{n});' for n in requests]
    src += ["return 0; }"]
    (tmp / "abi.c").write_text("\n".join(src) + "\n")
    binary = tmp / "abi"
    cc = subprocess.run(
        [gcc, "-g", "-O0", "-I", str(tmp / "inc"), "-o", str(binary), str(tmp / "abi.c")],
        capture_output=True,
        text=True,
    )
    assert cc.returncode == 0, f"gcc failed on {path}:\n{cc.stderr}"
    out = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout

    version, codes = (0, 0), {}
    for line in out.splitlines():
        tag, *rest = line.split()
        if tag == "VERSION":
            version = (int(rest[0]), int(rest[1]))
        else:
            codes[rest[0]] = int(rest[1])
    layouts = dwarf_layouts(binary, set(structs))
    assert set(layouts) == set(structs), f"no DWARF for {sorted(set(structs) - set(layouts))}"
    return HeaderFacts(path, version, codes, arg_structs, layouts)


@pytest.fixture(scope="module", params=HEADERS, ids=str)
def header(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> HeaderFacts:
    return _read_header(request.param, tmp_path_factory.mktemp("kfd_abi"))


# --------------------------------------------------------------------------------------------------------
# Our side: the same layout walk over ctypes


def ctypes_layout(cls: type) -> Layout:
    """Layout of a ctypes Structure/Union (members named in ``_anonymous_`` are flattened)."""
    layout: Layout = {"": (0, ctypes.sizeof(cls))}
    _walk_ctypes(cls, "", 0, layout)
    return layout


def _walk_ctypes(cls: type, prefix: str, base: int, out: Layout) -> None:
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for fname, ftype, *_ in cls._fields_:
        desc = getattr(cls, fname)
        offset = base + desc.offset
        if fname in anonymous:
            path = prefix.rstrip(".")
        else:
            path = prefix + fname
            out[path] = (offset, desc.size)
        _walk_ctypes_type(ftype, path, offset, out)


def _walk_ctypes_type(ftype: type, path: str, offset: int, out: Layout) -> None:
    if issubclass(ftype, ctypes.Structure | ctypes.Union):
        _walk_ctypes(ftype, f"{path}." if path else "", offset, out)
    elif issubclass(ftype, ctypes.Array):
        out[f"{path}[0]"] = (offset, ctypes.sizeof(ftype._type_))
        _walk_ctypes_type(ftype._type_, f"{path}[0]", offset, out)


def _changes_after(struct: type, version: tuple[int, int], abi: ModuleType = k) -> list[k.AbiChange]:
    return [c for c in abi.ABI_CHANGES if c.struct is struct and c.since > version]


def compare_struct(name: str, theirs: Layout, version: tuple[int, int], abi: ModuleType = k) -> list[str]:
    """Mismatches between the header's layout of ``name`` and ours in module `abi` (ours may only extend it)."""
    ours_cls = getattr(abi, name, None)
    if not isinstance(ours_cls, type) or not issubclass(ours_cls, ctypes.Structure):
        return [f"struct {name}: in the header, missing from {abi.__name__}"]
    ours = ctypes_layout(ours_cls)
    later = _changes_after(ours_cls, version, abi)
    renamed = {old: new for c in later for old, new in c.renamed.items()}
    problems = []
    for path, where in theirs.items():
        if path == "":
            continue
        head, _, tail = path.partition(".")
        our_path = ".".join(filter(None, [renamed.get(head, head), tail]))
        if our_path not in ours:
            problems.append(f"struct {name}: field {path} {where} missing from ours")
        elif ours[our_path] != where:
            problems.append(
                f"struct {name}: field {path} at (offset, size) {where} in the header, ours {ours[our_path]}"
            )
    size, our_size = theirs[""][1], ours[""][1]
    if size > our_size:
        problems.append(f"struct {name}: sizeof {size} in the header > ours {our_size}")
    elif size < our_size and size not in {c.old_size for c in later}:
        problems.append(
            f"struct {name}: sizeof {size} in the header < ours {our_size} with no recorded ABI_CHANGES"
        )
    return problems


# --------------------------------------------------------------------------------------------------------
# Checks against the header


def test_version(header: HeaderFacts) -> None:
    assert header.version[0] == k.KFD_IOCTL_MAJOR_VERSION, f"header major {header.version}"
    assert k.KFD_IOCTL_MINOR_VERSION >= header.version[1], f"header {header.version} is newer than ours"


def test_ioctls_match_header(header: HeaderFacts) -> None:
    problems = []
    for name, code in sorted(header.requests.items(), key=lambda kv: k.ioc_nr(kv[1])):
        nr, direction, size = k.ioc_nr(code), k.ioc_dir(code), k.ioc_size(code)
        if nr >= ROCM_ONLY_FIRST_NR:
            continue
        ours = k.BY_NAME.get(name)
        if ours is None:
            problems.append(f"AMDKFD_IOC_{name} ({code:#010x}) is missing from IOCTLS")
            continue
        if k.ioc_type(code) != k.AMDKFD_IOCTL_BASE or (nr, direction) != (ours.nr, ours.direction):
            problems.append(
                f"{name}: header nr/dir {nr:#x}/{direction.name}, ours {ours.nr:#x}/{ours.direction.name}"
            )
        struct = header.arg_structs.get(name)
        our_struct = getattr(ours.struct, "__name__", None)
        if struct != our_struct:
            problems.append(f"{name}: header argument struct {struct}, ours {our_struct}")
        if code != ours.request:
            if size > ours.size:
                problems.append(f"{name}: request {code:#010x} in the header, ours {ours.request:#010x}")
            else:  # an older, smaller struct: must be a prefix of ours
                problems += compare_struct(
                    struct or "?", header.layouts.get(struct, {"": (0, size)}), header.version
                )
    for ours in k.IOCTLS:  # `since` must agree with what the header has
        present = ours.name in header.requests
        if present != (ours.since <= header.version):
            problems.append(f"{ours.name}: since={ours.since} but header {header.version} has it: {present}")
    if problems:
        pytest.fail(f"KFD ioctl table differs from {header.path}:\n" + "\n".join(problems), pytrace=False)


def test_structs_match_header(header: HeaderFacts) -> None:
    problems = []
    for name, layout in sorted(header.layouts.items()):
        if name not in ROCM_ONLY_STRUCTS:
            problems += compare_struct(name, layout, header.version)
    if problems:
        pytest.fail(f"KFD structs differ from {header.path}:\n" + "\n".join(problems), pytrace=False)


def test_abi_changes_keep_older_layouts_as_prefix() -> None:
    for change in k.ABI_CHANGES:
        assert change.old_size is None or change.old_size < ctypes.sizeof(change.struct)
        names = [f[0] for f in change.struct._fields_]
        assert all(new in names for new in change.renamed.values()), change


# --------------------------------------------------------------------------------------------------------
# Pure-Python checks of the table


def test_table_unique_and_ordered() -> None:
    nrs = [i.nr for i in k.IOCTLS]
    assert nrs == sorted(nrs) and len(set(nrs)) == len(nrs)
    assert len(k.BY_NAME) == len(k.BY_NR) == len(k.BY_REQUEST) == len(k.IOCTLS)
    assert nrs == list(range(k.AMDKFD_COMMAND_START, k.AMDKFD_COMMAND_END))


def test_by_request_round_trips() -> None:
    for ioctl in k.IOCTLS:
        req = ioctl.request
        assert k.BY_REQUEST[req] is ioctl and k.lookup(req) is ioctl
        assert (k.ioc_dir(req), k.ioc_nr(req), k.ioc_size(req), k.ioc_type(req)) == (
            ioctl.direction,
            ioctl.nr,
            ioctl.size,
            ord("K"),
        )
        assert k.ioc(k.ioc_dir(req), k.ioc_nr(req), k.ioc_size(req)) == req


def test_known_request_values() -> None:
    assert k.ioc(k.IocDir.READ, 0x01, 8) == 0x80084B01 == k.BY_NAME["GET_VERSION"].request
    # _IOWR('K', 0x02, 96 bytes) with the 1.17 layout
    assert k.BY_NAME["CREATE_QUEUE"].request == 0xC0604B02
    assert k.BY_NAME["FREE_MEMORY_OF_GPU"].request == 0x40084B17


def test_lookup_by_nr_accepts_older_sizes() -> None:
    old = k.ioc(k.IocDir.READ_WRITE, 0x02, 88)  # 1.11 create_queue_args
    assert k.lookup(old) is k.BY_NAME["CREATE_QUEUE"]


@pytest.mark.parametrize("req", [0xC0184B7F, 0xC0104B80, 0x80086401])
def test_lookup_unknown_names_request_in_hex(req: int) -> None:
    with pytest.raises(k.UnknownIoctl, match=f"{req:#010x}") as err:
        k.lookup(req)
    assert isinstance(err.value, KeyError)


def test_some_layouts() -> None:
    assert ctypes.sizeof(k.kfd_event_data) == 48
    assert k.kfd_event_data.kfd_event_data_ext.offset == 32
    assert ctypes.sizeof(k.kfd_ioctl_dbg_trap_args) == 32 and k.kfd_ioctl_dbg_trap_args.u.offset == 8
    assert ctypes.sizeof(k.kfd_ioctl_svm_args) == 24
    assert ctypes.sizeof(k.kfd_ioctl_get_process_apertures_args) == 7 * 56 + 8
    assert k.KFD_EVENT_PAGE_SIZE == 32768 and k.KFD_SIGNAL_EVENT_LIMIT == 4096


def test_create_process_is_the_upstream_amdkfd_io_0x27(tmp_path: Path) -> None:
    """Interface 1.19 ("amdkfd: introduce new ioctl AMDKFD_IOC_CREATE_PROCESS", amd-gfx V7 2025-11-06) defines
    ``AMDKFD_IOC_CREATE_PROCESS AMDKFD_IO(0x27)`` and AMDKFD_COMMAND_END 0x28. No installed header has it yet, so
    the request is compiled from that definition with the header's own AMDKFD_IO macro."""
    gcc = shutil.which("gcc")
    if gcc is None or not HEADER.is_file():
        pytest.fail(f"the KFD ABI check needs gcc and the kernel headers; {INSTALL_HINT}")
    (tmp_path / "inc" / "drm").mkdir(parents=True)
    (tmp_path / "inc" / "drm" / "drm.h").write_text("#include <linux/types.h>\n")
    (tmp_path / "io.c").write_text(
        f'#include <stdio.h>\n#include "{HEADER.resolve()}"\n'
        'int main(void) { printf("%lu\\n", (unsigned long)AMDKFD_IO(0x27)); return 0; }\n'
    )
    subprocess.run([gcc, "-I", str(tmp_path / "inc"), "-o", str(tmp_path / "io"), str(tmp_path / "io.c")],
                   check=True, capture_output=True)
    code = int(subprocess.run([str(tmp_path / "io")], capture_output=True, text=True, check=True).stdout)
    entry = k.BY_NAME["CREATE_PROCESS"]
    assert entry.request == code and entry.struct is None and entry.since == (1, 19)
    assert k.AMDKFD_COMMAND_END == 0x28 and k.KFD_IOCTL_MINOR_VERSION >= 19


def test_read_pointers_are_positions_in_each_queue_kind_s_units():
    """SDMA reports bytes, monotonic; a CP a dword offset within its ring; an AQL queue the packets it has read,
    while its doorbell names the last packet written: each read back from where the packets written end."""
    from kfdtrace.driver import kfd_ioctl as K

    sdma, pm4, aql = K.QueueType.SDMA, K.QueueType.COMPUTE, K.QueueType.COMPUTE_AQL
    assert K.read_end(sdma, 4000, 5000, 4096) == 4000
    end = K.doorbell_end(pm4, 1250)  # 1250 dwords written into a 1 KiB ring: read pointers 226 and 220
    assert (end, K.read_end(pm4, 1250 % 256, end, 1024), K.read_end(pm4, 220, end, 1024)) == (5000, 5000, 4976)
    end = K.doorbell_end(aql, 3)  # packets 0..3 written: 3 read is one short, 4 all
    assert (end, K.read_end(aql, 3, end, 4096), K.read_end(aql, 4, end, 4096)) == (256, 192, 256)
