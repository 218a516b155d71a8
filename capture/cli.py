"""The `capture` command: `capture run [options] workload.py [args...]` or `capture run -m package.module`.

Exit status of `capture run`: the workload's own; 2 when capture refuses the command line or the output
before running anything (one line on stderr, no trace written); 1 when the trace could not be finished.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import os
import sys
import threading

import click

from kfdtrace.capture.recorder import DEFAULT_CHUNK, TRACKING_MODES, check_chunk
from kfdtrace.capture.session import Session, capture_workload, signals_between_records
from kfdtrace.capture.trace_file import CaptureFailed
from kfdtrace.cli import TerminalProgress, another_file, backend_options, check_backend, check_output, fail, user_errors
from kfdtrace.traces.info import format_summary


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kfdtrace")
def main() -> None:
    """Record everything a workload asks of the GPU into one trace."""


def default_output(target: str, module: bool) -> str:
    """<workload>-<timestamp>.kfdtrace in the current folder."""
    stem = target.rsplit(".", 1)[-1] if module else os.path.splitext(os.path.basename(target))[0]
    return f"{stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}.kfdtrace"


def check_run(target: str, module: bool, output: str, chunk_size: int, emulate: str | None,
              emulate_from: str | None) -> None:
    """Everything `capture run` can refuse before running the workload; ValueError with one line."""
    if not module and not os.path.isfile(target):
        raise ValueError(f"{target}: no such workload script")
    if module and not _findable(target.partition(".")[0]):
        raise ValueError(f"{target}: no such module (-m)")
    if not module:
        another_file(output, target, "the trace", regular=False)  # never over the workload
    check_chunk(chunk_size, "--chunk-size")  # (campaign 108: 128 MiB stopped the workload at its first big buffer)
    check_backend(emulate, emulate_from)
    check_output("-o", output, "the trace")


def _findable(top: str) -> bool:
    """Whether a top-level module or package of that name can be imported as the workload will be: from the
    current folder first, as `python -m` does (campaign 98: the `capture` script's own folder stood there), found
    without importing anything (a package's own modules are looked for once it runs, recorded)."""
    saved = list(sys.path)
    sys.path.insert(0, os.getcwd())
    try:
        return bool(top) and importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False
    finally:
        sys.path[:] = saved


def progress_text(session: Session) -> str | None:
    rec = session.recorder
    if rec is None:
        return None
    s = rec.trace.stats
    return f"{s['records']} records, {s['submissions']} submissions, {s['file_bytes'] / 1e6:.1f} MB"


def _quiet_capture_failures(args: threading.ExceptHookArgs, shown=threading.excepthook) -> None:
    """threading.excepthook: a workload thread stopped because the trace cannot be written (or the recording
    ended) says nothing; capture says why once, as it ends (campaign 88: a traceback for each thread)."""
    if args.exc_type is None or not issubclass(args.exc_type, CaptureFailed):
        shown(args)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@backend_options
@click.option("-o", "--output", metavar="FILE", help="Trace to write (default: <workload>-<timestamp>.kfdtrace).")
@click.option("--name", help="A name for the recording, kept in the trace's header.")
@click.option("-m", "module", is_flag=True, help="Run a module (like python -m) instead of a script.")
@click.option("--chunk-size", type=int, default=DEFAULT_CHUNK, show_default=True,
              help="Granularity of recorded CPU writes, in bytes (a power of two from 4096 to 32 MiB).")
@click.option("--tracking", type=click.Choice(TRACKING_MODES), default="auto", show_default=True,
              help="auto: record driver-announced writes exactly and compare raw-view buffers before each "
                   "submission using them; scan: compare every CPU-visible buffer a submission uses.")
@click.argument("target", metavar="WORKLOAD")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def run(emulate, emulate_from, output, name, module, chunk_size, tracking, target, args) -> None:
    """Run WORKLOAD (a script, or a module with -m) with recording on, write one trace, print a summary, and
    exit with the workload's status."""
    output = output or default_output(target, module)
    try:
        check_run(target, module, output, chunk_size, emulate, emulate_from)
    except ValueError as exc:
        fail(exc, 2)
    argv = ["capture", *sys.argv[1:]]  # the command as typed, options included
    threading.excepthook = _quiet_capture_failures
    session = Session(output, name=name, argv=argv, chunk_size=chunk_size, tracking=tracking)
    try:
        with signals_between_records(session):
            with TerminalProgress("capture", lambda: progress_text(session)):
                status = capture_workload(session, target, list(args), module=module, emulate=emulate,
                                          emulate_from=emulate_from)
            summary = session.close(status)
    except CaptureFailed as exc:
        with contextlib.suppress(CaptureFailed):
            session.close(1)  # the index, should there be room for it
        fail(exc, 1)
    if not summary:  # a fork's child ends here: the parent writes the trace
        sys.exit(status)
    click.echo(f"capture: wrote {output}", err=True)
    for line in format_summary(summary):
        click.echo(f"  {line}", err=True)
    sys.exit(status)


if __name__ == "__main__":
    main(prog_name="capture")
