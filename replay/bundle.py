"""Bug-report bundles: `kfdtrace bundle` packs a trace with what a triager needs, `kfdtrace unbundle` (and
`replay BUNDLE`) unpacks one, checking every member before writing any.

A bundle is a tar archive compressed with zstd (`.tar.zst`), of regular files with plain names (MEMBERS):
the trace, the recording machine (the trace header's host, KFD version, topology and GPUs), the replay report
on the machine that made the bundle (`replay --json`), and REPORT.md, which says in words what happened and,
for a hang or a divergence, where. The code objects the bundle's replay was given for other targets come along
as `<name>.<gfx>.co` or `<name>.hipfb`, which `replay BUNDLE` takes as its --code-objects folder. Bundles are
untrusted input: names, types, sizes and counts are checked against the limits below before anything is
extracted.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import zstandard

from kfdtrace.traces import records as R
from kfdtrace.traces.format import MAGIC, TraceError, TraceReader

if TYPE_CHECKING:
    import tarfile

    from kfdtrace.replay.code_objects import CodeObjectOptions

TRACE, MACHINE, REPLAY, REPORT = "trace.kfdtrace", "machine.json", "replay.json", "REPORT.md"
MEMBERS = (TRACE, MACHINE, REPLAY, REPORT)
MAX_MEMBERS = 64  # the four above and code objects
CODE_OBJECT_FILE = re.compile(r"(?P<name>.+?)(\.gfx[0-9a-z]+)?\.co|(?P<bundle>.+)\.hipfb")  # code_objects._folder_files
MAX_MEMBER_BYTES = 4 << 30
MAX_BUNDLE_BYTES = 8 << 30  # what an unbundle extracts at most, all members together
# and at most this many times the bundle's own bytes (beyond the first MIN_ALLOWANCE): the trace inside is
# compressed already and code objects shrink a few times, so more is a compression bomb
MAX_RATIO = 64
MIN_ALLOWANCE = 256 << 20
DEFAULT_CAP = 100 << 20  # what `bundle` writes at most unless told otherwise
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
OCTAL = re.compile(rb"[0-7]{1,12}")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class BundleError(TraceError):
    """A bundle that cannot be made or cannot be trusted."""


@dataclass
class BundleReport:
    path: str
    size: int
    status: int | None
    verdict: str

    def lines(self) -> list[str]:
        return [f"{self.path}: {self.size} bytes; replay here: {self.verdict}"]


def is_bundle(path: str) -> bool:
    """Whether the file at `path` starts as a bundle (a zstd frame), not as a trace."""
    if not os.path.isfile(path):  # reading a FIFO would wait for a writer
        return False
    try:
        with open(path, "rb") as f:
            return f.read(4) == ZSTD_MAGIC
    except OSError:
        return False


def machine(trace: TraceReader) -> dict:
    """What the trace says about the machine it was recorded on."""
    return {k: trace.header.get(k) for k in ("backend", "host", "kfd_version", "gpus", "topology")}


def replay_report(path: str, emulate: str | None, timeout: float,
                  code_objects: CodeObjectOptions | None = None) -> dict:
    """`replay --json` of the trace at `path` here (with `code_objects` for targets the recorded ones do not fit):
    the report, or the status and one-line error it fails with."""
    from kfdtrace.replay.cli import failures
    from kfdtrace.replay.engine import EXIT_INTERNAL, Options
    from kfdtrace.replay.session import replay_trace

    try:
        return replay_trace(path, Options(timeout=timeout, code_objects=code_objects), emulate=emulate).to_dict()
    except Exception as exc:
        status, kind = next(((s, k) for types, s, k in failures() if isinstance(exc, types)),
                            (EXIT_INTERNAL, "internal error"))
        return {"status": status, "error": f"replay: {kind}: {exc}"}


VERDICTS = {0: "OK", 1: "DIVERGED", 2: "HANG", 3: "CANNOT REPLAY HERE", 4: "BAD INPUT", 5: "INTERNAL ERROR"}


def verdict(report: dict) -> str:
    return VERDICTS.get(report.get("status"), f"status {report.get('status')}")


def code_object_members(trace: TraceReader, options: CodeObjectOptions | None, cap: int) -> dict[str, bytes]:
    """The code objects given to the bundle's replay, as members a replay of the bundle finds in its --code-objects
    folder: a --code-object as `<name>.<gfx>.co` (an offload bundle as `<name>.hipfb`), `<name>` being the recorded
    object it stands for, then the files of the --code-objects folder that stand for a recorded object on some
    target. Recorded objects without a name that can be a member's are left out; BundleError past `cap` bytes."""
    if options is None:
        return {}
    from kfdtrace.driver.code_object import CodeObject
    from kfdtrace.driver.code_object_bundle import is_bundle as is_offload_bundle

    recorded = [r.fields for r in R.checked(trace.records([R.CODE_OBJECT]))]  # (untrusted: each field checked)
    names = {f["name"] for f in recorded if NAME.fullmatch(f.get("name") or "") and f["name"] not in MEMBERS}
    out: dict[str, bytes] = {}

    def room(size: int) -> None:
        if len(MEMBERS) + len(out) >= MAX_MEMBERS or sum(map(len, out.values())) + size > cap:
            raise BundleError(f"the code objects given take more than the bundle holds ({MAX_MEMBERS - len(MEMBERS)} "
                              f"files, {cap} bytes): give only those for the targets the report is about")

    def add(member: str, data: bytes) -> None:
        if member not in out:
            room(len(data))
            out[member] = data

    for g in options.given:
        for name in sorted(n for n in names if any(g.selects(f) and f.get("name") == n for f in recorded)):
            if is_offload_bundle(g.data):
                add(f"{name}.hipfb", g.data)
            else:
                add(f"{name}.{CodeObject.parse(g.data).target_id.processor}.co", g.data)
    if options.directory is not None:
        for member in sorted(os.listdir(options.directory)):
            m = CODE_OBJECT_FILE.fullmatch(member)
            path = os.path.join(options.directory, member)
            if m and (m["name"] or m["bundle"]) in names and NAME.fullmatch(member) and os.path.isfile(path) and \
                    member not in out:
                room(os.path.getsize(path))
                with open(path, "rb") as f:
                    add(member, f.read(cap + 1))
    return out


def _without_debug_info(data: bytes) -> bytes:
    """A bundled code object (or offload bundle) without its debug information."""
    from kfdtrace.driver.code_object import CodeObjectError, without_debug_info

    try:
        return without_debug_info(data)[0]
    except CodeObjectError as exc:
        raise BundleError(f"--redact: a code object given cannot be read to take its debug information out: "
                          f"{exc}") from None


def report_md(trace_path: str, replayed: dict, how: str = "", objects: Sequence[str] = ()) -> str:
    """REPORT.md: what the trace is, and what replaying it here did (`how`: the replay's options), with the first
    hang or divergence; `objects`, the code objects bundled. The trace is named as the bundle names it (its
    file's own name and folder say where the reporter keeps it: a redacted bundle would carry them)."""
    from kfdtrace.traces.info import describe  # here: see bundle()
    target = ", ".join(replayed.get("target") or ())
    lines = ["# kfdtrace bug report", "", "## The trace", "", "```",
             *(line.replace(trace_path, TRACE) for line in describe(trace_path)), "```", "",
             f"## Replay on the machine that made this bundle: {verdict(replayed)}", ""]
    if target:
        lines += [f"Replayed on {replayed.get('backend') or 'this machine'}: {target}{how}.", ""]
    if objects:
        lines += ["Code objects given to the replay, in this bundle (`replay` of the bundle takes them as its "
                  "--code-objects folder):", "", *(f"- {name}" for name in objects), ""]
    if "error" in replayed:
        lines += ["```", replayed["error"], "```"]
    for i, loop in enumerate(replayed.get("loops") or ()):
        for result in loop:
            if result.get("hang"):
                lines += [f"Loop {i + 1} hung. Where each queue stopped (the packet at its read pointer):", "",
                          "```", result["hang"], "```"]
            if result.get("divergence"):
                d = result["divergence"]
                lines += [f"Loop {i + 1} diverged at checkpoint {d.get('checkpoint')}:", "", "```",
                          json.dumps(d, indent=1), "```"]
            if result.get("difference"):
                lines += [f"Loop {i + 1}: {result['difference']}"]
    folder = " --code-objects ." if objects else ""
    lines += ["", "## Reproduce", "", "```", f"replay {TRACE}{folder}            # or: replay this-bundle.tar.zst",
              f"kfdtrace dump {TRACE} | less", "```", ""]
    return "\n".join(lines)


def bundle(trace_path: str, out: str, *, emulate: str | None = None, timeout: float = 10.0, cap: int = DEFAULT_CAP,
           prepare: Callable[[str, str], None] | None = None, code_objects: CodeObjectOptions | None = None,
           redacted: bool = False) -> BundleReport:
    """Write the bundle of the trace at `trace_path` to `out`. `prepare(src, dst)`, if given, writes the trace
    to put in it (trimmed or redacted); `timeout`: the replay's, for a wait; `cap`: the most bytes the bundle
    may take; `code_objects`: the replay's builds of the recorded code objects for other targets (`redacted`:
    without their debug information, as redact leaves the recorded ones)."""
    import tarfile  # here, like to_json: `replay` reads traces through this module, and starts faster without them

    from kfdtrace.traces.dump import to_json

    with tempfile.TemporaryDirectory(prefix="kfdtrace-bundle-") as tmp:
        path = trace_path
        if prepare is not None:
            path = os.path.join(tmp, TRACE)
            prepare(trace_path, path)
        with TraceReader(path) as r:
            about = machine(r)
            objects = code_object_members(r, code_objects, cap)
        if redacted:
            objects = {name: _without_debug_info(data) for name, data in objects.items()}
        replayed = replay_report(path, emulate, timeout, code_objects)
        replayed["trace"] = TRACE  # not the folder it was replayed from
        how = f" ({f'--emulate {emulate}, ' if emulate else ''}--timeout {timeout:g})"
        members = {MACHINE: json.dumps(json.loads(to_json(about)), indent=1).encode(),  # bounded depth, bytes in hex
                   REPLAY: json.dumps(replayed, indent=1).encode(),
                   REPORT: report_md(path, replayed, how, list(objects)).encode(),
                   **objects}
        partial = out + ".partial"
        try:
            with open(partial, "wb") as f, zstandard.ZstdCompressor(level=10).stream_writer(f) as z, \
                    tarfile.open(fileobj=z, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
                tar.add(path, arcname=TRACE, recursive=False, filter=_plain)
                for name, data in members.items():
                    info = _plain(tarfile.TarInfo(name))
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            size = os.path.getsize(partial)
            if size > cap:
                raise BundleError(f"the bundle would take {size} bytes, over the {cap}-byte cap: trim the trace to "
                                  f"the submissions that matter (kfdtrace trim --submits A..B), or raise --max-size")
            os.replace(partial, out)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return BundleReport(out, size, replayed.get("status"), verdict(replayed))


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """A member as every bundle holds it: a regular file of no one's, dated 0."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o644
    return info


def _stream(path: str):
    return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)


def _read(stream, n: int, path: str) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise BundleError(f"{path}: ends inside a member (a truncated bundle)")
        data += chunk
    return data


def _header(block: bytes, path: str) -> tuple[str, int]:
    """The name and size of a POSIX ustar header block that stands for a plain regular file; BundleError for
    anything else (links, directories, pax or GNU extensions, a bad checksum)."""
    checksum = sum(block[:148]) + 8 * 32 + sum(block[156:])
    recorded, size = _octal(block[148:156]), _octal(block[124:136])
    # mode, uid, gid and mtime too: tarfile takes a header whose number it cannot read for the archive's end, and
    # would stop there without a word (campaign 115: members checked here went unextracted)
    numbers = (block[100:108], block[108:116], block[116:124], block[136:148])
    if recorded != checksum or size is None or block[257:262] != b"ustar" or None in map(_octal, numbers):
        raise BundleError(f"{path}: a member header is not a tar header (nothing was extracted)")
    name = block[:100].rstrip(b"\0").decode("ascii", "replace")
    if block[156:157] not in (b"0", b"\0"):
        raise BundleError(f"{path}: member {name[:80]!r} is not a regular file (a link, a directory or an "
                          f"extension header: nothing was extracted)")
    if block[345:500].strip(b"\0") or not NAME.fullmatch(name):
        raise BundleError(f"{path}: member {name[:80]!r} is not a plain file name (nothing was extracted)")
    return name, size


def _octal(field: bytes) -> int | None:
    """A tar header's number: octal digits only (int(x, 8) would take a sign, which no tar writes)."""
    digits = field.strip(b"\0 ")
    return int(digits, 8) if OCTAL.fullmatch(digits) else None


def check(path: str) -> dict[str, int]:
    """The members of the bundle at `path` and their sizes, every one checked (BundleError otherwise): a plain
    name, a regular file, within the size limits, no name twice, at most MAX_MEMBERS, and a trace among them.
    Read block by block, before tarfile sees it; nothing is written."""
    sizes: dict[str, int] = {}
    if not os.path.isfile(path):
        raise BundleError(f"{path}: not a regular file")
    if not os.path.getsize(path):
        raise BundleError(f"{path}: an empty file, not a bundle")
    allowance = min(MAX_BUNDLE_BYTES, max(MIN_ALLOWANCE, MAX_RATIO * os.path.getsize(path)))
    try:
        with _stream(path) as stream:
            while True:
                block = _read(stream, 512, path)
                if block == bytes(512):
                    break
                name, size = _header(block, path)
                if name not in MEMBERS and not CODE_OBJECT_FILE.fullmatch(name):
                    raise BundleError(f"{path}: member {name!r} is none a bundle holds ({', '.join(MEMBERS)}, and "
                                      f"code objects <name>.<gfx>.co or <name>.hipfb; nothing was extracted)")
                if name in sizes:
                    raise BundleError(f"{path}: member {name!r} comes twice (nothing was extracted)")
                if len(sizes) >= MAX_MEMBERS:
                    raise BundleError(f"{path}: more than {MAX_MEMBERS} members (nothing was extracted)")
                if size > MAX_MEMBER_BYTES or sum(sizes.values()) + size > MAX_BUNDLE_BYTES:
                    raise BundleError(f"{path}: member {name!r} of {size} bytes is over the limits (nothing was "
                                      f"extracted)")
                if sum(sizes.values()) + size > allowance:
                    raise BundleError(f"{path}: member {name!r} of {size} bytes makes the bundle unpack to over "
                                      f"{MAX_RATIO} times its own size (a compression bomb? nothing was extracted)")
                sizes[name] = size
                left = -(-size // 512) * 512
                while left:
                    left -= len(_read(stream, min(left, 1 << 20), path))
    except zstandard.ZstdError as exc:
        raise BundleError(f"{path}: not a bundle ({exc})") from None
    if TRACE not in sizes:
        raise BundleError(f"{path}: holds no {TRACE}")
    return sizes


def unbundle(path: str, dest: str) -> dict[str, str]:
    """Check the bundle at `path`, then extract its members into the directory `dest` (made if missing; no
    member may exist there yet); their paths by name."""
    import tarfile  # here: see bundle()

    sizes = check(path)
    os.makedirs(dest, exist_ok=True)
    for name in sizes:
        if os.path.lexists(os.path.join(dest, name)):
            raise BundleError(f"{os.path.join(dest, name)} exists: unbundle into an empty directory")
    out: dict[str, str] = {}
    try:
        with _stream(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                if info.name not in sizes or info.size != sizes[info.name]:
                    raise BundleError(f"{path}: changed while it was read")
                target = os.path.join(dest, info.name)
                src = tar.extractfile(info)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                out[info.name] = target
                with os.fdopen(fd, "wb") as f:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
        if out.keys() != sizes.keys():
            raise BundleError(f"{path}: changed while it was read, or tar read it otherwise: "
                              f"{', '.join(sorted(sizes.keys() - out.keys()))} not extracted")
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        _remove(out.values())
        raise BundleError(f"{path}: not a readable bundle ({type(exc).__name__}: {exc})") from None
    except BundleError:
        _remove(out.values())
        raise
    return out


def _remove(paths: Iterable[str]) -> None:
    """Remove the members extracted before a failure: a part of a bundle would pass for the whole."""
    for p in paths:
        with contextlib.suppress(OSError):
            os.unlink(p)


class Unpacked(NamedTuple):
    trace: str
    code_objects: str | None  # the folder of the code objects a bundle holds (None: it holds none)


@contextlib.contextmanager
def trace_of(path: str) -> Iterator[Unpacked]:
    """The path of the trace at `path`, or of the trace in the bundle at `path` with the folder of the code objects
    it holds (checked, then extracted into a temporary directory for as long as the context lasts)."""
    if not is_bundle(path):
        yield Unpacked(path, None)
        return
    with tempfile.TemporaryDirectory(prefix="kfdtrace-unbundle-") as tmp:
        files = unbundle(path, tmp)
        yield Unpacked(files[TRACE], tmp if any(CODE_OBJECT_FILE.fullmatch(n) for n in files) else None)


assert MAGIC != ZSTD_MAGIC  # a trace and a bundle are told apart by their first bytes
