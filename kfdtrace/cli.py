"""The `kfdtrace` command: devices, selftest and disasm, and the trace tools (info, dump, export, diff, trim,
minimize, redact, bundle, unbundle)."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from kfdtrace.driver.code_object_errors import CodeObjectError
from kfdtrace.driver.errors import KfdTraceError
from kfdtrace.traces import records as R
from kfdtrace.traces.format import TraceError, TraceReader
from kfdtrace.traces.printable import one_line, printable

if TYPE_CHECKING:
    from kfdtrace.replay.bundle import Unpacked

EMULATE_HELP = "Emulate these GPUs (e.g. gfx942,gfx1100) instead of using /dev/kfd; also KFDTRACE_EMULATE."
EMULATE_FROM_HELP = "Emulate exactly the GPUs of a KFD topology tree copied from another machine."


def fail(message: object, status: int) -> None:
    """One line on stderr, "<program>: error: <message>", then exit with `status`."""
    program = click.get_current_context().find_root().info_name
    click.echo(f"{program}: error: {one_line(message)}", err=True)
    sys.exit(status)


@contextlib.contextmanager
def unpacked(path: str) -> Iterator[Unpacked]:
    """The trace at `path`, or the trace in the bundle at `path` with the folder of the code objects it holds
    (checked, then extracted for as long as the context lasts): every tool reads a bug report's bundle as it reads
    its trace."""
    from kfdtrace.replay.bundle import trace_of

    with trace_of(path) as found:
        if found.trace == path:
            yield found
            return
        try:
            yield found
        except TraceError as exc:  # named by the bundle, not by the temporary folder it was extracted into
            raise TraceError(str(exc).replace(os.path.dirname(found.trace) + os.sep, f"{path} member ")) from None


@contextlib.contextmanager
def trace_file(path: str) -> Iterator[str]:
    """The path of the trace at `path`, or of the trace in the bundle at `path` (as `unpacked`)."""
    with unpacked(path) as found:
        yield found.trace


@contextlib.contextmanager
def read_trace(path: str, *, header: bool = True) -> Iterator[TraceReader]:
    """The trace at `path` (or in the bundle at `path`), opened for a tool; a trace read only as far as it goes
    (not closed, or damaged) says so in one line on stderr, so that what the tool makes of it is not taken for
    the whole. `header`: refuse one whose header is not what the format says (the tools that copy or lay it out;
    `dump` shows the records of a trace whatever its header holds)."""
    with trace_file(path) as file, TraceReader(file) as reader:
        if reader.recovered:
            program = click.get_current_context().find_root().info_name
            click.echo(f"{program}: warning: {one_line(reader.recovery_note)}", err=True)
        if header:  # campaign 74: a field nested 1000 deep ended export and trim in a RecursionError
            R.check_map(f"{path}: the header", reader.header, R.HEADER)
        yield reader


def another_file(output: str, trace: str, what: str, *, regular: bool = True) -> None:
    """ValueError when `output` names the file `trace` names (the same path, or a link to it): writing it would
    destroy what is being read; or, with `regular`, when it is something other than a regular file (a device, a
    pipe, a folder): a trace is written by seeking and cut to size, and a failed one removed."""
    if regular and os.path.lexists(output) and not os.path.isfile(output):
        raise ValueError(f"{what} goes to a file: {output} is not a regular file")
    same = os.path.abspath(output) == os.path.abspath(trace)
    with contextlib.suppress(OSError):  # an output that does not exist yet is no input
        same = same or os.path.samefile(output, trace)
    if same:
        raise ValueError(f"{what} must go to another file than {trace}, which it reads")


class Seconds(click.FloatRange):
    """A finite number of seconds in a range: click's FloatRange lets inf and nan through, which a subprocess
    timeout or a wait cannot take."""

    name = "seconds"

    def convert(self, value, param, ctx):
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


def user_errors(fn: Callable) -> Callable:
    """Turn the errors a user can act on into one line on stderr and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:  # the reader of our output went away (`| head`): stop quietly, as the docs advise
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except (KfdTraceError, TraceError, CodeObjectError, ValueError, OSError) as exc:
            fail(exc, 1)
        except KeyboardInterrupt as exc:  # Ctrl-C (130), or SIGTERM within terminated_as_interrupt (143)
            terminated = isinstance(exc, Terminated)
            how, signum = ("terminated", signal.SIGTERM) if terminated else ("interrupted", signal.SIGINT)
            program = click.get_current_context().find_root().info_name
            click.echo(f"{program}: {how}{f'; {one_line(exc)}' if str(exc) else ''}", err=True)
            sys.exit(128 + signum)

    return wrapper


def check_output(option: str, path: str, what: str) -> None:
    """Refuse an output file `what` cannot be written to (a missing folder, a folder, a full device, no
    permission) with a one-line ValueError, before the work that makes it runs. A file the check made is
    removed, and an existing regular file is left as it is."""
    existed = os.path.lexists(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)  # a FIFO: no hang
        try:
            if not existed or not stat.S_ISREG(os.fstat(fd).st_mode):
                os.write(fd, b"\0")  # /dev/full and the like refuse it
        finally:
            os.close(fd)
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write {what} there: {exc.strerror}") from None
    finally:
        if not existed and os.path.isfile(path):
            os.remove(path)


def check_backend(emulate: str | None, emulate_from: str | None) -> None:
    """Refuse bad --emulate / --emulate-from values (and a bad KFDTRACE_EMULATE) before anything runs
    (ValueError, one line). An empty --emulate is refused too: it would otherwise mean the default machine."""
    from kfdtrace.driver.backend import ENV_EMULATE, topology_from_directory
    from kfdtrace.driver.emulator.boards import parse_emulate_spec

    if emulate is not None and emulate_from is not None:
        raise ValueError("give --emulate or --emulate-from, not both")
    if emulate is not None:
        parse_emulate_spec(emulate)
    elif emulate_from is None and os.environ.get(ENV_EMULATE):
        try:
            parse_emulate_spec(os.environ[ENV_EMULATE])
        except ValueError as exc:
            raise ValueError(f"{ENV_EMULATE}: {exc}") from None
    if emulate_from is not None:
        topology_from_directory(emulate_from)


class Terminated(KeyboardInterrupt):
    """SIGTERM, as `terminated_as_interrupt` raises it."""


@contextlib.contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM (a timeout(1), a CI job's end) interrupts as Ctrl-C does (`Terminated`), so what the
    command started is stopped and its temporary files removed on the way out."""
    def interrupt(signum: int, frame: object) -> None:
        raise Terminated

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class TerminalProgress:
    """One status line rewritten in place, on a terminal only (nothing at all otherwise). `poll`, if given,
    is asked for the text twice a second; `update` sets it directly."""

    def __init__(self, prefix: str, poll: Callable[[], str | None] | None = None, stream=sys.stderr):
        self.prefix, self.stream, self.on = prefix, stream, stream.isatty()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(poll,), daemon=True) if self.on and poll else None

    def __enter__(self) -> TerminalProgress:
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread:
            self._stop.set()
            self._thread.join()
        if self.on:
            self.stream.write("\r\033[K")

    def update(self, text: str) -> None:
        if self.on:
            with self._lock:
                self.stream.write(f"\r{self.prefix}: {text}\033[K")
                self.stream.flush()

    def _run(self, poll: Callable[[], str | None]) -> None:
        while not self._stop.wait(0.5):
            text = poll()
            if text:
                self.update(text)


def backend_options(fn: Callable) -> Callable:
    """--emulate / --emulate-from, shared by every command that opens GPUs."""
    fn = click.option("--emulate-from", "emulate_from", metavar="DIR", help=EMULATE_FROM_HELP)(fn)
    return click.option("--emulate", metavar="TARGETS", help=EMULATE_HELP)(fn)


def code_object_options(fn: Callable) -> Callable:
    """--code-object / --code-objects: builds of the recorded code objects for targets they do not fit (replay,
    and trim --reconstruct)."""
    fn = click.option("--code-objects", metavar="DIR", type=click.Path(file_okay=False),
                      help="Per-target builds of the recorded code objects, named <name>.<gfx>.co, for targets the "
                           "recorded objects do not fit.")(fn)
    return click.option("--code-object", "code_object", multiple=True, metavar="NAME_OR_HASH=PATH",
                        help="A code object (or offload bundle) to load in place of the recorded one NAME_OR_HASH "
                             "names (its name, or 8+ hex digits of its key); repeatable.")(fn)


def json_option(fn: Callable) -> Callable:
    """--json, for the commands whose output is data."""
    return click.option("--json", "as_json", is_flag=True, help="The report as one JSON document.")(fn)


def show_report(report, as_json: bool, prefix: str = "") -> None:
    """A command's report (a dataclass with `lines()`): its lines, or its fields as one JSON document."""
    if as_json:
        import dataclasses

        from kfdtrace.traces.dump import to_json

        click.echo(to_json(dataclasses.asdict(report)))
    else:
        for line in report.lines():
            click.echo(printable(f"{prefix}{line}"))  # names, notes and paths are the trace's


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kfdtrace")
def main() -> None:
    """Record, carry and replay what a program asks of an AMD GPU."""


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


@main.command()
@backend_options
@click.option("--sysfs", metavar="DIR", help="Only read a KFD topology tree copied from a machine (no GPU opened).")
@user_errors
def devices(emulate: str | None, emulate_from: str | None, sysfs: str | None) -> None:
    """List the GPU nodes: node, gpu_id, target, family, the device index a program gets (or "hidden" when
    ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES hide it), VRAM, SDMA engines, backend."""
    from kfdtrace.driver.backend import open_syscalls, topology_from_directory
    from kfdtrace.driver.families import target_by_version
    from kfdtrace.driver.topology import read_topology
    from kfdtrace.driver.visible import visible_gpus

    check_backend(emulate, emulate_from)
    if sysfs:
        topology, backend = topology_from_directory(sysfs), f"sysfs:{sysfs}"
    else:
        syscalls = open_syscalls(emulate, emulate_from)
        topology, backend = read_topology(syscalls), syscalls.name
    device = {node.index: str(i) for i, node in enumerate(visible_gpus(topology.gpus, os.environ))}
    rows = [("node", "gpu_id", "target", "family", "device", "VRAM", "SDMA (xGMI)", "backend")]
    for node in topology.gpus:
        target = target_by_version(node.gfx_target_version)
        rows.append((str(node.index), f"{node.gpu_id:#06x}", target.name, target.family.name,
                     device.get(node.index, "hidden"), _gib(node.vram_size),
                     f"{node.num_sdma_engines} ({node.num_sdma_xgmi_engines})", backend))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@main.command()
@backend_options
@user_errors
def selftest(emulate: str | None, emulate_from: str | None) -> None:
    """Run the driver's end-to-end checks; one line per check, non-zero exit on any failure."""
    from kfdtrace.driver.selftest import run_selftest
    from kfdtrace.driver.system import System

    check_backend(emulate, emulate_from)
    with System.open(emulate, emulate_from) as system:
        ok = run_selftest(system, click.echo)
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("code_object", metavar="CODE_OBJECT", type=click.Path(dir_okay=False))
@click.option("--kernel", "-k", metavar="NAME", help="Only this kernel.")
@click.option("--target", metavar="GFX", help="The entry of an offload bundle to show (and the target to check).")
@user_errors
def disasm(code_object: str, kernel: str | None, target: str | None) -> None:
    """Show a code object's kernels: descriptor fields and machine code, disassembled by kfdtrace's own decoder."""
    from kfdtrace.driver.disasm import disassemble, read_code_object

    for line in disassemble(read_code_object(code_object, target), kernel):
        click.echo(printable(line))  # kernel names are the code object's


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="Also read every frame and verify its checksum.")
@click.option("--json", "as_json", is_flag=True, help="The same as one JSON document (bytes in hex).")
@user_errors
def info(trace: str, check: bool, as_json: bool) -> None:
    """Summarise a trace from its header and index: machine, GPUs, counts, sizes."""
    with trace_file(trace) as file:
        if as_json:
            from kfdtrace.traces.dump import to_json
            from kfdtrace.traces.info import facts

            click.echo(to_json(facts(file, check, shown=trace)))
            return
        from kfdtrace.traces.info import describe

        for line in describe(file, check, shown=trace):
            click.echo(printable(line))  # names, host and command are the trace's


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--queue", "-q", type=int, metavar="Q", help="Of the records about a queue, only queue Q's.")
@click.option("--submits", "-s", metavar="A..B", help="Submissions A to B (from 0; A.., ..B, A) and the records "
              "around them.")
@click.option("--kind", "-k", "kinds", multiple=True, type=click.Choice(["ioctl", "packet", "memory", "sync", "other"]),
              help="Only records of this kind (repeatable).")
@click.option("--buffers", metavar="DIR", type=click.Path(file_okay=False),
              help="Also write the contents of every CPU write and checkpointed buffer to DIR, a file each.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record (JSON Lines).")
@user_errors
def dump(trace: str, queue: int | None, submits: str | None, kinds: tuple[str, ...], buffers: str | None,
         as_json: bool) -> None:
    """Every record of a trace decoded, in stream order: ioctls by field, packets by name, buffers by name."""
    from kfdtrace.traces.dump import Selection, dump, parse_range

    selection = Selection(parse_range(submits) if submits is not None else None, queue, frozenset(kinds) or None)
    with read_trace(trace, header=False) as r:
        if selection.submits is not None and selection.submits[0] >= r.submissions:
            raise ValueError(f"submission {selection.submits[0]}: the trace has "
                             + (f"submissions 0..{r.submissions - 1}" if r.submissions else "none"))
        if queue is not None and queue not in (ids := {q.fields.get("queue") for q in r.records({"queue"})}):
            raise ValueError(f"--queue {queue}: the trace has "
                             + (f"queues {', '.join(map(str, sorted(ids)))}" if ids else "no queue"))
        write = sys.stdout.write
        dump(r, lambda line: write(line + "\n"), selection, as_json, buffers)


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--jsonl", metavar="OUT", help="JSON Lines, one record each, as `dump --json` gives them ('-': stdout).")
@click.option("--perfetto", metavar="OUT", help="A Chrome/Perfetto trace-event timeline (JSON): a track per queue.")
@user_errors
def export(trace: str, jsonl: str | None, perfetto: str | None) -> None:
    """Write a trace's records as JSON Lines, or as a timeline for ui.perfetto.dev."""
    from kfdtrace.traces.export import export_jsonl, export_perfetto

    if (jsonl is None) == (perfetto is None):
        raise ValueError("give one of --jsonl OUT and --perfetto OUT")
    if jsonl != "-":
        another_file(jsonl or perfetto, trace, "the export", regular=False)  # streamed: a pipe will do
    with read_trace(trace) as r:
        if jsonl is not None:
            with click.open_file(jsonl, "w") as out:
                export_jsonl(r, out)
        else:
            export_perfetto(r, perfetto)


@main.command()
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="The differences as one JSON document.")
def diff(a: str, b: str, as_json: bool) -> None:
    """The first structural difference between two traces, then how many records, packets and buffers differ.
    Exit status 0 when they do the same, 1 when they differ, 2 when either cannot be read."""
    import json

    from kfdtrace.traces.diff import diff_traces

    try:
        with trace_file(a) as fa, trace_file(b) as fb, TraceReader(fa) as ra, TraceReader(fb) as rb:
            result = diff_traces(ra, rb)  # the differences say which was recovered
        result.a, result.b = a, b  # a bundle's name, not the trace's extracted from it
    except (TraceError, ValueError, OSError) as exc:
        fail(exc, 2)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        for line in result.lines():
            click.echo(printable(line))  # names are the traces'
    sys.exit(1 if result.differs else 0)


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--submits", "-s", required=True, metavar="A..B", help="The submissions to keep (from 0; inclusive).")
@click.option("--output", "-o", required=True, metavar="OUT", type=click.Path(dir_okay=False),
              help="The trimmed trace.")
@click.option("--reconstruct", is_flag=True, help="Find the contents the trace lacks at A by replaying it up to "
              "A (on the recorded GPUs, emulated, or those of --emulate).")
@click.option("--emulate", metavar="TARGETS", help="With --reconstruct: replay on these emulated GPUs.")
@code_object_options
@json_option
@user_errors
def trim(trace: str, submits: str, output: str, reconstruct: bool, emulate: str | None,
         code_object: tuple[str, ...], code_objects: str | None, as_json: bool) -> None:
    """A standalone trace of submissions A..B: what was live at A, recreated with its known contents, then the
    range. Refused, saying why, when the range reads memory whose contents at A the trace does not hold."""
    from kfdtrace.traces.dump import parse_range
    from kfdtrace.traces.trim import TrimRefused
    from kfdtrace.traces.trim import trim as trim_trace

    if not reconstruct and (emulate or code_object or code_objects):
        fail("--emulate, --code-object and --code-objects say how --reconstruct replays; without it nothing is "
             "replayed", 1)
    first, last = parse_range(submits)
    another_file(output, trace, "the trimmed trace")
    with unpacked(trace) as found, read_trace(found.trace) as r:
        rebuild = None
        if reconstruct:
            from kfdtrace.replay.code_objects import parse_code_object_options
            from kfdtrace.replay.engine import BadInput
            from kfdtrace.replay.session import contents_at
            from kfdtrace.replay.translate import ReplayError

            check_backend(emulate, None)
            # a bundle's code objects, unless others are given, as `replay BUNDLE` takes them (campaign 94: the
            # replay read the bundle's path as a trace)
            objects = parse_code_object_options(list(code_object), code_objects or found.code_objects)

            def rebuild(vas: list[int]) -> dict[int, bytes]:
                try:
                    return contents_at(found.trace, first, vas, emulate=emulate, code_objects=objects)
                except (ReplayError, BadInput) as exc:
                    raise TrimRefused(f"--reconstruct: {exc}") from None

        show_report(trim_trace(r, output, first, last, rebuild), as_json, f"{output}: ")


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--until", required=True, metavar="'CMD {trace}'",
              help="The command that shows the failure; {trace} stands for each candidate trace.")
@click.option("--output", "-o", required=True, metavar="OUT", type=click.Path(dir_okay=False),
              help="The smallest trace found.")
@click.option("--match", metavar="REGEX", help="Also require this in the command's output (the same failure).")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Candidates run side by side.")
@click.option("--timeout", type=Seconds(min=0.1), default=120.0, show_default=True,
              help="Seconds one run of the command may take (a run that takes longer does not reproduce).")
@click.option("--confirm", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Runs in a row the command must fail the same way on a candidate to keep it (and on the "
                   "original and the result): a failure that depends on timing would otherwise shrink to a trace "
                   "that fails only sometimes.")
@json_option
@user_errors
def minimize(trace: str, until: str, output: str, match: str | None, jobs: int, timeout: float, confirm: int,
             as_json: bool) -> None:
    """The smallest trace on which CMD still exits as it does on TRACE: delta debugging over submissions, then
    their packets, then CPU writes."""
    from kfdtrace.traces.minimize import CommandTest
    from kfdtrace.traces.minimize import minimize as minimize_trace

    another_file(output, trace, "the minimized trace")
    outcome = CommandTest(until, match, timeout)
    with read_trace(trace) as r, TerminalProgress("minimize") as progress, terminated_as_interrupt():
        report = minimize_trace(r, output, outcome, jobs, progress.update, confirm)
    show_report(report, as_json, f"{output}: ")


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, metavar="OUT", type=click.Path(dir_okay=False),
              help="The redacted trace.")
@click.option("--keep-data", is_flag=True, help="Keep every CPU write's contents (only the header and paths go).")
@json_option
@user_errors
def redact(trace: str, output: str, keep_data: bool, as_json: bool) -> None:
    """A copy fit to attach to a public report: no command line, host names, paths or unneeded data; says what
    was removed and what was kept."""
    from kfdtrace.traces.redact import redact as redact_trace

    another_file(output, trace, "the redacted trace")
    with read_trace(trace) as r:
        show_report(redact_trace(r, output, keep_data), as_json, f"{output}: ")


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, metavar="OUT", type=click.Path(dir_okay=False),
              help="The bundle (report.tar.zst).")
@click.option("--submits", "-s", metavar="A..B", help="Put only these submissions in (kfdtrace trim).")
@click.option("--redact", "redacted", is_flag=True, help="Put the redacted trace in (kfdtrace redact).")
@click.option("--emulate", metavar="TARGETS", help="Replay on these emulated GPUs instead of this machine's.")
@click.option("--timeout", type=Seconds(min=0.01), default=10.0, show_default=True,
              help="Seconds a wait of the replay may take (hang).")
@click.option("--max-size", type=click.IntRange(min=1), default=100, show_default=True, metavar="MB",
              help="The most the bundle may take.")
@code_object_options
@json_option
@user_errors
def bundle(trace: str, output: str, submits: str | None, redacted: bool, emulate: str | None, timeout: float,
           max_size: int, code_object: tuple[str, ...], code_objects: str | None, as_json: bool) -> None:
    """A bug report in one file: the trace, the recording machine, the replay report here and a REPORT.md."""
    from kfdtrace.replay.bundle import bundle as make_bundle
    from kfdtrace.replay.code_objects import parse_code_object_options
    from kfdtrace.traces.dump import parse_range
    from kfdtrace.traces.redact import redact as redact_trace
    from kfdtrace.traces.trim import trim as trim_trace

    check_backend(emulate, None)
    another_file(output, trace, "the bundle")
    span = parse_range(submits) if submits is not None else None
    objects = parse_code_object_options(list(code_object), code_objects)

    def prepare(src: str, dst: str) -> None:
        """The trace to bundle: trimmed, then redacted, as asked."""
        if span is not None:
            with TraceReader(src) as r:
                trim_trace(r, dst + ".trimmed", span[0], span[1])
            src = dst + ".trimmed"
        if redacted:
            with TraceReader(src) as r:
                redact_trace(r, dst + ".redacted")
            src = dst + ".redacted"
        os.replace(src, dst)

    steps = span is not None or redacted

    with unpacked(trace) as found:  # a bundle's trace is bundled again (trimmed or redacted, say), with its code
        if found.code_objects is not None and code_objects is None:  # objects (campaign 94), unless others are given
            objects = parse_code_object_options(list(code_object), found.code_objects)
        show_report(make_bundle(found.trace, output, emulate=emulate, timeout=timeout, cap=max_size << 20,
                                prepare=prepare if steps else None, code_objects=objects, redacted=redacted),
                    as_json)


@main.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option("--output", "-o", "dest", metavar="DIR", type=click.Path(file_okay=False),
              help="Where to put its files [default: BUNDLE with .d for .tar.zst].")
@user_errors
def unbundle(bundle_path: str, dest: str | None) -> None:
    """Check every member of a bundle (names, types, sizes), then extract them."""
    from kfdtrace.replay.bundle import unbundle as extract

    dest = dest or bundle_path.removesuffix(".zst").removesuffix(".tar") + ".d"
    for path in extract(bundle_path, dest).values():
        click.echo(printable(path))
