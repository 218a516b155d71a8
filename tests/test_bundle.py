"""`kfdtrace bundle` / `unbundle` and `replay BUNDLE` (issue 12): one file for a bug report, and hostile bundles
refused before anything is extracted."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest
import zstandard
from click.testing import CliRunner

from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.driver.sdma import DIALECTS
from kfdtrace.replay import bundle as B
from kfdtrace.traces.format import TraceReader

from .test_replay import rewrite, sample

STRESS = sample("sdma_stress-gfx942")


def run(*args: str):
    return CliRunner().invoke(kfdtrace_cli, list(args))


def members(path: str) -> dict[str, bytes]:
    with zstandard.ZstdDecompressor().stream_reader(open(path, "rb")) as z, tarfile.open(fileobj=z, mode="r|") as t:
        return {m.name: t.extractfile(m).read() for m in t}


def replay(path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("name", ["sdma_stress-gfx942", "peer_ring-2xgfx942", "ping_pong-gfx1100"])
def test_a_bundle_holds_the_trace_machine_replay_and_report(name, tmp_path):
    out = str(tmp_path / "report.tar.zst")
    res = run("bundle", sample(name), "-o", out)
    assert res.exit_code == 0 and "replay here: OK" in res.output, res.output
    got = members(out)
    assert list(got) == list(B.MEMBERS)
    assert got[B.TRACE] == open(sample(name), "rb").read()
    with TraceReader(sample(name)) as r:
        assert json.loads(got[B.MACHINE])["gpus"] == r.header["gpus"]
    assert json.loads(got[B.REPLAY])["status"] == 0 and "Replay on the machine that made this bundle: OK" in \
        got[B.REPORT].decode()
    done = replay(out, "--emulate-recorded")
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr


def test_every_trace_tool_reads_a_bundle_as_its_trace(tmp_path):
    out = str(tmp_path / "report.tar.zst")
    assert run("bundle", STRESS, "-o", out, "--emulate", "gfx942").exit_code == 0
    res = run("info", out)
    assert res.exit_code == 0 and res.output.startswith(f"{out}: kfdtrace trace format"), res.output
    assert json.loads(run("info", "--json", out).output)["path"] == out
    dumped = run("dump", out, "-k", "packet").output
    assert dumped == run("dump", STRESS, "-k", "packet").output and "COPY_LINEAR" in dumped
    res = run("diff", out, STRESS)
    assert res.exit_code == 0 and res.output.startswith(f"A: {out} (") and "no difference" in res.output, res.output
    trimmed = str(tmp_path / "t.kfdtrace")
    assert run("trim", out, "-s", "0..0", "-o", trimmed).exit_code == 0
    assert run("export", out, "--jsonl", str(tmp_path / "x.jsonl")).exit_code == 0
    again = str(tmp_path / "again.tar.zst")  # a bundle bundled again, redacted
    res = run("bundle", out, "-o", again, "--redact", "--emulate", "gfx942")
    assert res.exit_code == 0 and "replay here: OK" in res.output, res.output
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(B.ZSTD_MAGIC + b"not a frame")
    res = run("info", str(bad))
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "not a bundle" in res.output, res.output


def test_a_trimmed_redacted_bundle(tmp_path):
    out, dest = str(tmp_path / "r.tar.zst"), str(tmp_path / "x")
    res = run("bundle", STRESS, "-o", out, "--submits", "4..9", "--redact", "--emulate", "gfx1100")
    assert res.exit_code == 0, res.output
    assert run("unbundle", out, "-o", dest).exit_code == 0
    with TraceReader(os.path.join(dest, B.TRACE)) as r:
        assert r.submissions == 6 and r.header["command"] is None
    assert "gfx1100" in json.loads(open(os.path.join(dest, B.REPLAY)).read())["target"][0]


def test_a_hang_is_reported_with_the_packet_each_queue_stopped_at(tmp_path):
    """The consumer's last signals dropped: the CPU's last wait never completes."""
    bad, out = str(tmp_path / "hang.kfdtrace"), str(tmp_path / "h.tar.zst")
    d, seen = DIALECTS["sdma4.4"], [0]

    def edit(rec, r, w):
        if rec.type == "doorbell":
            seen[0] += 1
            if seen[0] == 32:
                ring = rec.fields["ring"]
                return {**rec.fields, "ring": b"".join(ring[p.offset:p.offset + p.size] for p in d.iter_packets(ring)
                                                       if p.name != "FENCE")}
        return rec.fields

    rewrite(STRESS, bad, edit)
    res = run("bundle", bad, "-o", out, "--timeout", "0.3", "--emulate", "gfx942")
    assert res.exit_code == 0 and "replay here: HANG" in res.output, res.output
    report = members(out)[B.REPORT].decode()
    assert "Loop 1 hung" in report and "the wait for 16 at" in report and "(semaphores+0x30)" in report, report
    assert replay(out, "--timeout", "0.3").returncode == 2


def test_a_compute_trace_bundled_for_another_family_takes_its_code_objects(tmp_path):
    """The replay a bundle runs needs builds of the recorded code objects for another target, as replay does."""
    from kfdtrace.driver.kernels.build import BUILT

    from .test_compute_capture import vector_add

    path, out = str(tmp_path / "v.kfdtrace"), str(tmp_path / "b.tar.zst")
    vector_add(path, "gfx942", aql=True)
    res = run("bundle", path, "-o", out, "--emulate", "gfx1100")
    assert res.exit_code == 0 and "CANNOT REPLAY HERE" in res.output, res.output
    os.unlink(out)
    res = run("bundle", path, "-o", out, "--emulate", "gfx1100", "--code-objects", str(BUILT))
    assert res.exit_code == 0 and "replay here: OK" in res.output, res.output
    got = members(out)
    assert json.loads(got["replay.json"])["status"] == 0
    # the folder's file standing for the recorded object `corpus` comes along; the others there do not
    assert sorted(got) == sorted([*B.MEMBERS, "corpus.hipfb"])
    assert got["corpus.hipfb"] == (BUILT / "corpus.hipfb").read_bytes()
    report = got[B.REPORT].decode()
    assert "Replayed on emulated: gpu0(gfx1100" in report and "(--emulate gfx1100, --timeout 10)" in report, report
    assert "- corpus.hipfb" in report and "replay trace.kfdtrace --code-objects ." in report, report
    # replaying the bundle on another family takes its code objects, unless the user gives a folder of their own
    done = replay(out, "--emulate", "gfx1201")
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert replay(out, "--emulate", "gfx1201", "--code-objects", str(empty)).returncode == 3
    # campaign 94: a bundle bundled again (to redact it) kept none of its code objects, and trim --reconstruct
    # read the bundle's path as a trace
    again = str(tmp_path / "again.tar.zst")
    res = run("bundle", out, "-o", again, "--redact", "--emulate", "gfx1201")
    assert res.exit_code == 0 and "replay here: OK" in res.output, res.output
    assert "corpus.hipfb" in members(again)
    trimmed = str(tmp_path / "t.kfdtrace")
    res = run("trim", out, "-s", "1..1", "--reconstruct", "--emulate", "gfx1201", "-o", trimmed)
    assert res.exit_code == 0, res.output
    assert replay(trimmed, "--emulate", "gfx1201", "--code-objects", str(BUILT)).returncode == 0


def test_a_code_object_in_a_bundle_that_does_not_fit_is_named_as_the_bundles_member(tmp_path):
    """helper 34: a bundle holding a garbage corpus.gfx1100.co was refused naming a temporary folder gone by then."""
    from .test_compute_capture import vector_add

    path, out = str(tmp_path / "v.kfdtrace"), str(tmp_path / "b.tar.zst")
    vector_add(path, "gfx942", aql=True)
    hostile(out, [entry(B.TRACE, open(path, "rb").read()), entry("corpus.gfx1100.co", b"garbage")])
    done = replay(out, "--emulate", "gfx1100")
    assert done.returncode == 3 and f"{out} member corpus.gfx1100.co does not fit (not an ELF file" in done.stderr, \
        done.stderr
    assert "kfdtrace-unbundle" not in done.stderr


def test_a_bundle_takes_a_code_object_given_by_name(tmp_path):
    """--code-object NAME=ELF goes in as <name>.<gfx>.co, which a replay of the bundle on that target loads."""
    from kfdtrace.driver.kernels.build import BUILT

    from .test_compute_capture import vector_add

    path, out = str(tmp_path / "v.kfdtrace"), str(tmp_path / "b.tar.zst")
    vector_add(path, "gfx942", aql=True)
    elf = BUILT / "corpus-gfx1030.co"
    res = run("bundle", path, "-o", out, "--emulate", "gfx1030", "--code-object", f"corpus={elf}")
    assert res.exit_code == 0 and "replay here: OK" in res.output, res.output
    got = members(out)
    assert got["corpus.gfx1030.co"] == elf.read_bytes() and len(got) == len(B.MEMBERS) + 1
    dest = tmp_path / "x"
    assert run("unbundle", out, "-o", str(dest)).exit_code == 0
    assert (dest / "corpus.gfx1030.co").read_bytes() == elf.read_bytes()
    assert replay(out, "--emulate", "gfx1030").returncode == 0
    assert replay(out, "--emulate", "gfx90a").returncode == 3  # a gfx1030 build runs on no other family


def test_the_size_cap_leaves_nothing_behind(tmp_path):
    out = str(tmp_path / "big.tar.zst")
    with pytest.raises(B.BundleError, match="over the 1000-byte cap: trim the trace"):
        B.bundle(STRESS, out, cap=1000)
    assert os.listdir(tmp_path) == []


# -- hostile bundles --------------------------------------------------------------------------------------------
def hostile(path: str, entries: list[tuple[tarfile.TarInfo, bytes]], fmt=tarfile.USTAR_FORMAT) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    with open(path, "wb") as f:
        f.write(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


def entry(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "",
          size: int | bytes | None = None):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if size is None and kind == tarfile.REGTYPE else (size or 0)
    return info, data


TRACE_BYTES = open(STRESS, "rb").read()
HOSTILE = {
    "traversal": ([entry("../escape", b"x"), entry(B.TRACE, TRACE_BYTES)], "not a plain file name"),
    "absolute": ([entry("/tmp/escape", b"x")], "not a plain file name"),
    "nested": ([entry("a/b", b"x")], "not a plain file name"),
    "symlink": ([entry(B.TRACE, kind=tarfile.SYMTYPE, link="/etc/passwd")], "not a regular file"),
    "hardlink": ([entry(B.TRACE, kind=tarfile.LNKTYPE, link="/etc/passwd")], "not a regular file"),
    "directory": ([entry("d", kind=tarfile.DIRTYPE)], "not a regular file"),
    "twice": ([entry(B.TRACE, TRACE_BYTES), entry(B.TRACE, TRACE_BYTES)], "comes twice"),
    "many": ([entry(f"m{i}.gfx942.co", b"x") for i in range(B.MAX_MEMBERS + 1)], f"more than {B.MAX_MEMBERS} members"),
    # found by helper 36: extracted, though no bundle holds one
    "unknown": ([entry("evil.sh", b"x"), entry(B.TRACE, TRACE_BYTES)], "member 'evil.sh' is none a bundle holds"),
    "no trace": ([entry("REPORT.md", b"hi")], "holds no trace.kfdtrace"),
    "huge": ([entry(B.TRACE, b"", size=B.MAX_MEMBER_BYTES + 1)], "over the limits"),
    # campaign 57: gigabytes of zeros in a small bundle were unpacked (twice) before the replay began
    "bomb": ([entry("c.gfx1100.co", b"", size=B.MIN_ALLOWANCE + 1)], "(a compression bomb? nothing was extracted)"),
    # a size tarfile would read as -513 or -1: the count of bytes left never reached 0
    "negative size": ([entry(B.TRACE, b"", size=b"-0001001")], "not a tar header"),
    "minus one": ([entry(B.TRACE, b"", size=b"-1")], "not a tar header"),
}


def header_only(path: str, info: tarfile.TarInfo) -> str:
    """A bundle of one member header, claiming `info.size` (an int, or the raw bytes of the size field), and no
    data behind it."""
    size = info.size
    info.size = size if isinstance(size, int) else 0
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    if not isinstance(size, int):
        block[124:136] = size.ljust(11, b" ") + b"\0"
        block[148:156] = b" " * 8
        block[148:156] = f"{sum(block):06o}\0 ".encode()
    open(path, "wb").write(zstandard.ZstdCompressor().compress(bytes(block) + bytes(1024)))
    return path


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_a_hostile_bundle_is_refused_before_anything_is_extracted(case, tmp_path):
    entries, text = HOSTILE[case]
    if case in ("huge", "bomb", "negative size", "minus one"):
        path = header_only(str(tmp_path / "b.tar.zst"), entries[0][0])
    else:
        path = hostile(str(tmp_path / "b.tar.zst"), entries)
    dest = tmp_path / "out"
    res = run("unbundle", path, "-o", str(dest))
    assert res.exit_code == 1 and text in res.output and len(res.output.splitlines()) == 1, res.output
    assert not dest.exists() and not (tmp_path / "escape").exists()
    done = replay(path)
    assert done.returncode == 4 and text in done.stderr and "Traceback" not in done.stderr


def test_pax_and_gnu_extensions_are_refused(tmp_path):
    long_name = "a" * 120
    path = hostile(str(tmp_path / "p.tar.zst"), [entry(long_name, b"x")], fmt=tarfile.PAX_FORMAT)
    res = run("unbundle", path, "-o", str(tmp_path / "o"))
    assert res.exit_code == 1 and "not a regular file" in res.output


@pytest.mark.parametrize("data", [b"\x28\xb5\x2f\xfd garbage", zstandard.ZstdCompressor().compress(b"not a tar" * 99),
                                  zstandard.ZstdCompressor().compress(b"")])
def test_garbage_and_truncated_bundles_are_one_line(data, tmp_path):
    path = tmp_path / "g.tar.zst"
    path.write_bytes(data)
    res = run("unbundle", str(path), "-o", str(tmp_path / "o"))
    assert res.exit_code == 1 and len(res.output.splitlines()) == 1 and "Traceback" not in res.output


def test_an_empty_file_is_no_bundle(tmp_path):
    path = tmp_path / "e.tar.zst"
    path.write_bytes(b"")
    res = run("unbundle", str(path), "-o", str(tmp_path / "o"))
    assert res.exit_code == 1 and res.output.strip().endswith(f"error: {path}: an empty file, not a bundle")


def test_unbundle_never_overwrites(tmp_path):
    out, dest = str(tmp_path / "r.tar.zst"), tmp_path / "d"
    assert run("bundle", STRESS, "-o", out).exit_code == 0
    dest.mkdir()
    (dest / B.REPORT).write_text("mine")
    res = run("unbundle", out, "-o", str(dest))
    assert res.exit_code == 1 and "exists" in res.output and (dest / B.REPORT).read_text() == "mine"


def test_the_report_as_json(tmp_path):
    res = run("bundle", STRESS, "-o", str(tmp_path / "b.tar.zst"), "--json")
    report = json.loads(res.output)
    assert res.exit_code == 0 and report["status"] == 0 and report["verdict"] == "OK" and report["size"] > 0


@pytest.mark.parametrize("tool", ["replay", "info"])
def test_a_damaged_trace_in_a_bundle_is_named_as_the_bundles_member(tool, tmp_path):
    """Found by helper 36: errors named the temporary folder the bundle was extracted into, gone by then."""
    out = str(tmp_path / "b.tar.zst")
    hostile(out, [entry(B.TRACE, b"garbage" * 10)])
    if tool == "replay":
        message = replay(out, "--emulate", "gfx942").stderr
    else:
        message = run("info", out).output
    assert f"{out} member trace.kfdtrace: not a kfdtrace file" in message and "kfdtrace-unbundle" not in message, \
        message


def test_a_redacted_bundle_names_no_file_or_folder_of_the_reporters(tmp_path):
    """Found by helper 41: REPORT.md carried the trace's file name and replay.json the bundler's temporary
    folder; the code objects given to the replay kept their debug information (the build's folder)."""
    import shutil

    from .test_compute_capture import vector_add
    from .test_redact import debug_build

    private = tmp_path / "alice_bug_report"
    private.mkdir()
    path, out = str(private / "alice_bug.kfdtrace"), str(tmp_path / "b.tar.zst")
    vector_add(path, "gfx942", aql=True)
    objects = tmp_path / "objects"
    objects.mkdir()
    for target in ("gfx1100",):
        shutil.copy(debug_build(tmp_path, target), objects / f"corpus.{target}.co")
    res = run("bundle", path, "-o", out, "--redact", "--emulate", "gfx942", "--code-objects", str(objects))
    assert res.exit_code == 0, res.output
    got = members(out)
    for name, data in got.items():
        for secret in (b"alice", b"kfdtrace-bundle-", str(tmp_path).encode()):
            assert secret not in data, (name, secret)
    assert json.loads(got[B.REPLAY])["trace"] == B.TRACE and "corpus.gfx1100.co" in got, sorted(got)


@pytest.mark.parametrize("field", [(100, 108), (108, 116), (116, 124), (136, 148)], ids=["mode", "uid", "gid", "mtime"])
def test_a_member_header_tar_cannot_read_is_refused_before_anything_is_extracted(field, tmp_path):
    """Campaign 115: a member whose mtime (or mode, uid, gid) is no octal number passed the check, and tarfile took
    its header for the archive's end: `unbundle` extracted the members before it and said nothing, and `replay`
    failed with an internal error."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for info, data in (entry("machine.json", b"{}"), entry(B.TRACE, TRACE_BYTES)):
            t.addfile(info, io.BytesIO(data))
    tar = bytearray(raw.getvalue())
    at = 512 + 512  # the trace's header, after machine.json's header and its one block of data
    lo, hi = field
    tar[at + lo:at + hi] = b"z" * (hi - lo - 1) + b"\0"
    tar[at + 148:at + 156] = b" " * 8
    tar[at + 148:at + 156] = f"{sum(tar[at:at + 512]):06o}\0 ".encode()
    path = tmp_path / "b.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(bytes(tar)))
    dest = tmp_path / "out"
    res = run("unbundle", str(path), "-o", str(dest))
    assert res.exit_code == 1 and "not a tar header" in res.output and len(res.output.splitlines()) == 1, res.output
    assert not dest.exists()
    done = replay(str(path))
    assert done.returncode == 4 and "not a tar header" in done.stderr, done.stderr
