"""`kfdtrace disasm`: descriptors and disassembly from kfdtrace's own decoder, against llvm-objdump-19."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.driver.kernels.reference import CASES

BUILT = os.path.join(os.path.dirname(__file__), "..", "driver", "kernels", "built")
TARGETS = ["gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1201"]
OBJDUMP = shutil.which("llvm-objdump-19")
LINE = re.compile(r"^\s+([0-9a-f]{12}): ((?:[0-9A-F]{8} )+)\s*(.*)$")


def listing(*args: str) -> list[str]:
    res = CliRunner().invoke(kfdtrace_cli, ["disasm", *args])
    assert res.exit_code == 0, res.output
    return res.output.splitlines()


def llvm(path: str, kernel: str) -> list[tuple[int, str]]:
    out = subprocess.run([OBJDUMP, "-d", f"--disassemble-symbols={kernel}", path], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\t(.*?)\s*// ([0-9A-F]{12}):", line)
        if m:
            rows.append((int(m.group(2), 16), m.group(1).strip()))
    return rows


@pytest.mark.skipif(OBJDUMP is None, reason="llvm-objdump-19 is not installed (.ci/run installs llvm-19)")
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kernel", ["vector_add", "saxpy"])
def test_the_listing_is_llvm_objdumps(target, kernel):
    path = os.path.join(BUILT, f"corpus-{target}.co")
    ours = [(int(m.group(1), 16), m.group(3)) for line in listing(path, "-k", kernel) if (m := LINE.match(line))]
    end = ours[-1][0] + 4  # llvm-objdump goes on into the padding after the kernel's last instruction
    assert ours and ours == [row for row in llvm(path, kernel) if row[0] < end]


def test_the_descriptor_and_the_kernels_facts_are_shown():
    lines = listing(os.path.join(BUILT, "corpus.hipfb"), "--target", "gfx1100", "-k", "vector_add")
    assert lines[0] == f"code object v5 for gfx1100: {len(CASES)} kernels"
    assert lines[2].startswith("vector_add: wave32, ") and "288 bytes of kernel arguments" in lines[2]
    assert "    .amdhsa_user_sgpr_count 15" in lines and "    .amdhsa_system_sgpr_workgroup_id_x 1" in lines


@pytest.mark.parametrize("args, why", [
    (["corpus.hipfb"], "a bundle for gfx1030, gfx1100, gfx1201, gfx90a, gfx942: pick one with --target"),
    (["corpus-gfx942.co", "-k", "nope"], "has no kernel 'nope'"),
    (["corpus-gfx942.co", "--target", "gfx1100"], "code object is for gfx942; this device is gfx1100"),
    (["BUILD.txt"], "BUILD.txt: not an ELF file"),
])
def test_bad_input_is_one_line(args, why):
    res = CliRunner().invoke(kfdtrace_cli, ["disasm", os.path.join(BUILT, args[0]), *args[1:]])
    assert res.exit_code == 1 and why in res.output and len(res.output.strip().splitlines()) == 1, res.output
