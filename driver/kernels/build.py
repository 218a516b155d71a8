"""Build the kernel corpus: `python -m kfdtrace.driver.kernels.build [--out DIR] [--mnemonics]`.

Layout decision: **one code object per target holding every kernel** (built/corpus-<target>.co, and for the RDNA
targets a wave64 build, corpus-<target>-wave64.co), so a loader or a test opens one file per device; kernel names
are unique across the sources for that reason. Each source compiles on its own to LLVM bitcode (clang-19, OpenCL C
2.0, code object v5, no device libraries: prelude.h is the whole environment); llvm-link-19 joins the bitcode of one
target, clang-19 compiles that to one object and ld.lld-19 links it into a shared object. Linking the bitcode rather
than the objects matters: ld.lld would keep one NT_AMDGPU_METADATA note per object, and a loader reads one note
holding every kernel.

The multi-target bundle (built/corpus.hipfb) is what HIP fat binaries are: a clang offload bundle with one
empty host entry and one `hipv4-amdgcn-amd-amdhsa--<target>` entry per code object, each entry 4096-aligned
(as clang aligns HIP bundles). clang-offload-bundler-19 (Debian package clang-tools-19) writes it.

The output is deterministic: sources compile from their own folder under bare file names (no build paths in
the objects), no build id is asked for, and the same inputs give the same bytes. built/BUILD.txt records the
compiler that made the committed objects, so a rebuild check can tell a different compiler from a change.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["BUILT", "BUNDLE", "BUNDLE_ALIGN", "CFLAGS", "SOURCE_DIR", "TARGETS", "WAVE64_TARGETS", "BuildError",
           "build",
           "bundle_entry_id", "compiler_version", "mnemonics", "object_path", "sources"]

SOURCE_DIR = Path(__file__).resolve().parent
BUILT = SOURCE_DIR / "built"
TARGETS = ("gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1201")
# RDNA runs wave32 by default and wave64 when a kernel is built so: these targets also get a wave64 corpus
# (built/corpus-<target>-wave64.co, -mwavefrontsize64), so the emulator runs both wave sizes of the same kernels
WAVE64_TARGETS = ("gfx1030", "gfx1100", "gfx1201")
BUNDLE = "corpus.hipfb"
BUNDLE_ALIGN = 4096
HOST_ENTRY = "host-x86_64-unknown-linux-gnu"  # the bundler needs one host entry (it crashes without)
CFLAGS = ("-x", "cl", "-cl-std=CL2.0", "-cl-no-stdinc", "-cl-fp32-correctly-rounded-divide-sqrt", "-cl-kernel-arg-info",
          "-target", "amdgcn-amd-amdhsa", "-mcode-object-version=5", "-nogpulib", "-O2")
TOOLS = {"clang": "clang-19", "link": "llvm-link-19", "lld": "ld.lld-19", "bundler": "clang-offload-bundler-19",
         "objdump": "llvm-objdump-19"}
_MNEMONIC = re.compile(r"^\s+([a-z_][a-z0-9_]*)\b")


class BuildError(RuntimeError):
    """A tool is missing or failed."""


def sources(folder: Path = SOURCE_DIR) -> list[Path]:
    """The corpus's OpenCL C sources, in name order."""
    return sorted(folder.glob("*.cl"))


def object_path(target: str, folder: Path = BUILT, wave64: bool = False) -> Path:
    """Where the code object of `target` is (its wave64 build's, with `wave64`)."""
    return folder / f"corpus-{target}{'-wave64' if wave64 else ''}.co"


def bundle_entry_id(target: str) -> str:
    """The offload bundle entry id of `target`'s code object (HIP's spelling)."""
    return f"hipv4-amdgcn-amd-amdhsa--{target}"


def _tool(key: str) -> str:
    path = shutil.which(TOOLS[key])
    if path is None:
        raise BuildError(f"{TOOLS[key]} not found on PATH: install Debian's clang-19, lld-19, clang-tools-19 "
                         f"and llvm-19 to build the kernel corpus")
    return path


def _run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise BuildError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    return done.stdout


def compiler_version() -> str:
    """The first line of clang-19 --version."""
    return _run([_tool("clang"), "--version"]).splitlines()[0].strip()


def _compile(target: str, work: Path, srcs: Iterable[Path], wave64: bool = False) -> Path:
    """One relocatable object of every source for `target`."""
    name = object_path(target, work, wave64).stem
    flags = [f"-mcpu={target}", *(["-mwavefrontsize64"] if wave64 else [])]
    bitcode = []
    for src in srcs:
        bc = work / f"{src.stem}-{name}.bc"
        # bare file names from the source folder: no path of this checkout ends up in the object
        _run([_tool("clang"), *CFLAGS, *flags, "-emit-llvm", "-c", src.name, "-o", str(bc)], cwd=src.parent)
        bitcode.append(str(bc))
    linked, obj = work / f"{name}.bc", work / f"{name}.o"
    _run([_tool("link"), *bitcode, "-o", str(linked)])
    _run([_tool("clang"), "-target", "amdgcn-amd-amdhsa", *flags, "-nogpulib", "-O2", "-c", str(linked),
          "-o", str(obj)])
    return obj


def build(out: Path = BUILT, targets: Iterable[str] = TARGETS, src_dir: Path = SOURCE_DIR) -> list[Path]:
    """Compile and link one code object per target into `out`, then the bundle of them all; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    targets = tuple(targets)
    srcs = sources(src_dir)
    if not srcs:
        raise BuildError(f"no .cl sources in {src_dir}")
    written = []
    with tempfile.TemporaryDirectory(prefix="kfdtrace-corpus-") as tmp:
        work = Path(tmp)
        for target in targets:
            for wave64 in (False, True) if target in WAVE64_TARGETS else (False,):
                co = object_path(target, out, wave64)
                _run([_tool("lld"), "-shared", "--no-undefined", "-o", str(co),
                      str(_compile(target, work, srcs, wave64))])
                written.append(co)
        empty = work / "host.o"
        empty.write_bytes(b"")
        ids = [HOST_ENTRY, *(bundle_entry_id(t) for t in targets)]
        bundle = out / BUNDLE
        _run([_tool("bundler"), "-type=o", f"-bundle-align={BUNDLE_ALIGN}", f"-targets={','.join(ids)}",
              f"-input={empty}", *(f"-input={object_path(t, out)}" for t in targets), f"-output={bundle}"])
        written.append(bundle)
    (out / "BUILD.txt").write_text(f"{compiler_version()}\n")
    return written


def mnemonics(code_object: Path, kernel: str | None = None) -> set[str]:
    """The distinct instruction mnemonics llvm-objdump-19 shows in a code object's text (or one kernel's)."""
    only = [f"--disassemble-symbols={kernel}"] if kernel else []
    text = _run([_tool("objdump"), "-d", *only, str(code_object)])
    return {m.group(1) for line in text.splitlines() if (m := _MNEMONIC.match(line))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kfdtrace.driver.kernels.build", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=BUILT, help="folder for the built objects (default: %(default)s)")
    parser.add_argument("--target", action="append", choices=TARGETS, help="build only these targets")
    parser.add_argument("--mnemonics", action="store_true",
                        help="do not build: count the distinct mnemonics of the objects in --out")
    parser.add_argument("--list", action="store_true", help="with --mnemonics: print them too")
    args = parser.parse_args(argv)
    try:
        if args.mnemonics:
            union: set[str] = set()
            for target in args.target or TARGETS:
                found = mnemonics(object_path(target, args.out))
                union |= found
                print(f"{target}: {len(found)} mnemonics" + (f": {' '.join(sorted(found))}" if args.list else ""))
            print(f"all: {len(union)} mnemonics")
            return 0
        for path in build(args.out, args.target or TARGETS):
            print(path)
    except BuildError as e:
        print(f"build: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
