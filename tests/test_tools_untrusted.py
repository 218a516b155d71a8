"""Every trace tool (issue 12) on hostile input: a corrupt trace is one line and a non-zero status, a truncated
one is read as far as it goes (or refused in one line), never a traceback."""

from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

from kfdtrace.cli import main as kfdtrace_cli

from .test_replay import sample

STRESS = sample("sdma_stress-gfx942")
TOOLS = {
    "dump": ["dump", "{t}"],
    "dump --json --buffers": ["dump", "--json", "{t}", "--buffers", "{o}.d"],
    "info --json": ["info", "--json", "{t}"],
    "export --jsonl": ["export", "{t}", "--jsonl", "{o}"],
    "export --perfetto": ["export", "{t}", "--perfetto", "{o}"],
    "diff": ["diff", "{t}", STRESS],
    "trim": ["trim", "{t}", "-s", "2..5", "-o", "{o}"],
    "minimize": ["minimize", "{t}", "--until", f"{sys.executable} -c pass {{trace}}", "-o", "{o}"],
    "redact": ["redact", "{t}", "-o", "{o}"],
    "bundle": ["bundle", "{t}", "-o", "{o}", "--timeout", "1"],
}


def damaged(tmp_path, how: str) -> str:
    data = bytearray(open(STRESS, "rb").read())
    if how == "corrupt header":
        data[12:16] = b"\xff\xff\xff\xff"
    elif how == "garbage":
        data = bytearray(os.urandom(4096))
    elif how == "truncated":
        data = data[: len(data) * 2 // 3]
    elif how == "flipped frame":
        data[len(data) // 2] ^= 0x40
    path = tmp_path / f"{how.replace(' ', '_')}.kfdtrace"
    path.write_bytes(bytes(data))
    return str(path)


def run_tool(tool: str, trace: str, out: str):
    """`kfdtrace TOOL ...` on `trace`: its result, once checked for an exception that escaped or a traceback."""
    res = CliRunner().invoke(kfdtrace_cli, [a.replace("{t}", trace).replace("{o}", out) for a in TOOLS[tool]])
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), \
        f"{tool} on {os.path.basename(trace)} raised {res.exception!r}"
    assert "Traceback" not in res.output
    return res


@pytest.mark.parametrize("how", ["corrupt header", "garbage", "truncated", "flipped frame"])
@pytest.mark.parametrize("tool", TOOLS, ids=list(TOOLS))
def test_a_damaged_trace_is_one_line_or_read_as_far_as_it_goes(tool, how, tmp_path):
    res = run_tool(tool, damaged(tmp_path, how), str(tmp_path / "out"))
    if res.exit_code != 0 and not (tool == "diff" and res.exit_code == 1):  # diff: 1 says they differ
        errors = [line for line in res.output.splitlines() if "error" in line]
        assert len(errors) == 1, res.output
    if how in ("corrupt header", "garbage"):
        assert res.exit_code != 0, f"{tool} accepted a {how} trace"



def deeply_nested(tmp_path, where: str) -> str:
    """A trace with lists nested a thousand deep in its header's host, or nine hundred deep in a checkpoint's
    wait: as deep as msgpack still reads, deeper than Python's recursion allows a naive walk."""
    import zlib

    from kfdtrace.traces import format as F
    from kfdtrace.traces.format import TraceWriter

    path = str(tmp_path / f"deep-{where}.kfdtrace")
    nested: list = []
    for _ in range(900):
        nested = [nested]
    with TraceWriter(path, {}) as w:
        w.record("checkpoint", wait={"x": nested if where == "wait" else 1}, buffers=[], in_flight=None)
        w.close({})
    if where == "header":
        data = open(path, "rb").read()
        magic, major, minor, length, _ = F.FILE_HEADER.unpack_from(data, 0)
        raw = b"\x81\xa4host\x81\xa1x" + b"\x91" * 1000 + b"\x90"  # {"host": {"x": [[[...]]]}}
        open(path, "wb").write(F.FILE_HEADER.pack(magic, major, minor, len(raw), zlib.crc32(raw)) + raw
                               + data[F.FILE_HEADER.size + length:])
    return path


@pytest.mark.parametrize("where", ["header", "wait"])
@pytest.mark.parametrize("tool", TOOLS, ids=list(TOOLS))
def test_deeply_nested_values_are_no_traceback(tool, where, tmp_path):
    run_tool(tool, deeply_nested(tmp_path, where), str(tmp_path / "out"))
