"""The `replay` command: re-execute a trace here, verify it, or stress with it.

Exit status:
  0  every submission completed, every queue drained and every checkpoint matched;
  1  diverged: a checkpoint differs, or a wait the recording timed out on completed;
  2  hang: a wait timed out, a queue did not drain, or the GPU stopped a queue (also when the recording hung
     at the same wait);
  3  the trace cannot be replayed on this target (packets, GPUs or memory; found before anything is submitted);
  4  bad input: an unreadable trace, one with nothing to replay, bad options;
  5  internal error: a bug in the replayer (please report it; --debug shows the traceback).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import traceback

import click

from kfdtrace.cli import (
    TerminalProgress,
    another_file,
    backend_options,
    check_backend,
    check_output,
    code_object_options,
)
from kfdtrace.traces.printable import one_line, printable

# The replay engine (and the driver, numpy) load when a replay runs, not for --help or a bad option.


def failures() -> tuple[tuple[tuple[type[BaseException], ...], int, str], ...]:
    """What an exception means to the user: (types, exit status, how the message starts); first match wins."""
    from kfdtrace.replay.engine import EXIT_BAD_INPUT, EXIT_UNSUPPORTED, BadInput
    from kfdtrace.replay.translate import ReplayError
    from kfdtrace.traces.format import TraceError

    return (((click.BadParameter,), EXIT_BAD_INPUT, "error"),
            ((ReplayError,), EXIT_UNSUPPORTED, "cannot replay here"),
            ((BadInput, TraceError), EXIT_BAD_INPUT, "error"))


def parse_gpu_map(text: str | None) -> dict[int, int] | None:
    if text is None:
        return None
    try:
        pairs = [(int(a), int(b)) for a, b in (item.split(":") for item in text.split(","))]
    except ValueError:
        raise click.BadParameter(f"--gpu-map {text!r}: expected recorded:target pairs such as 0:1,1:0") from None
    mapping = dict(pairs)
    if len(mapping) < len(pairs):  # campaign 95: the last of them won
        twice = next(a for i, (a, _) in enumerate(pairs) if a in dict(pairs[:i]))
        raise click.BadParameter(f"--gpu-map {text!r} says twice where recorded GPU {twice} goes")
    if min(mapping.keys() | mapping.values()) < 0:
        raise click.BadParameter(f"--gpu-map {text!r}: GPU indices count from 0")
    return mapping


SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str | None) -> int | None:
    """--max-memory: bytes, or a whole number of K, M or G (binary units)."""
    if text is None:
        return None
    number, unit = (text[:-1], text[-1].upper()) if text[-1:].isalpha() else (text, "")
    if unit not in SIZE_SUFFIXES or not (number.isascii() and number.isdigit()) or int(number) == 0:
        raise click.BadParameter(f"--max-memory {text!r}: give a size greater than 0 in bytes, or with K, M or G "
                                 f"such as 512M or 4G")
    return int(number) * SIZE_SUFFIXES[unit]


def check_options(emulate: str | None, emulate_from: str | None, emulate_recorded: bool, device: int | None,
                  mapping: dict[int, int] | None, loop: int, concurrent: int, relocate: str, timeout: float) -> None:
    """Refuse contradictory or out-of-range options with click.BadParameter (exit 4), before anything runs."""
    if device is not None and mapping is not None:
        raise click.BadParameter("give --device or --gpu-map, not both")
    if device is not None and device < 0:
        raise click.BadParameter(f"--device {device}: target devices count from 0")
    if sum((emulate is not None, emulate_from is not None, emulate_recorded)) > 1:
        raise click.BadParameter("give one of --emulate, --emulate-from, --emulate-recorded")
    if loop < 1 or concurrent < 1:
        raise click.BadParameter("--loop and --concurrent take 1 or more")
    if relocate == "never" and concurrent > 1:
        raise click.BadParameter("--relocate never keeps every buffer at its recorded address, so only one "
                                 "instance can run at a time: drop --concurrent or allow relocation")
    if not math.isfinite(timeout) or timeout <= 0:
        raise click.BadParameter(f"--timeout {timeout}: give a finite number of seconds greater than 0")
    try:
        if not emulate_recorded:
            check_backend(emulate, emulate_from)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class _Command(click.Command):
    """click's usage errors (an unknown option, a value of the wrong type) exit 4, bad input, as the options this
    command checks itself do (click's own 2 is replay's status for a hang), with the JSON error under --json."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)  # (the parser takes them from the list)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.exit_code = 4  # EXIT_BAD_INPUT (replay.engine, not loaded for a bad option)
            if "--json" in given:  # the report as data, as for the options this command checks (campaign 109)
                click.echo(json.dumps({"status": 4, "error": f"replay: error: {one_line(exc.format_message())}"}))
            raise


@click.command(cls=_Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("trace", metavar="TRACE|BUNDLE", type=click.Path(dir_okay=False))
@backend_options
@click.option("--emulate-recorded", is_flag=True,
              help="Emulate exactly the GPUs the trace was recorded on, each recorded GPU's work on its own.")
@click.option("--device", type=int, help="Replay every recorded GPU's work on this target device (so one GPU's "
              "memory that another could not reach, as recorded, it reaches here).")
@click.option("--gpu-map", help="Recorded GPU index to target device index, e.g. 0:1,1:0.")
@click.option("--loop", type=int, default=1, show_default=True, help="Replay N times, from fresh inputs each time.")
@click.option("--concurrent", type=int, default=1, show_default=True,
              help="Run K independent instances at once, on separate buffers and queues.")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Compare the checkpoints.")
@click.option("--relocate", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True)
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds a wait may take (hang); one that took longer when recorded may take 4 times as long.")
@click.option("--max-memory", metavar="SIZE",
              help="Host memory the trace's GTT and userptr buffers may take at their peak, x --concurrent "
                   "(bytes, or K/M/G) [default: half of MemAvailable].")
@code_object_options
@click.option("--queue-type", type=click.Choice(["recorded", "aql", "pm4"]), default="recorded", show_default=True,
              help="The queues compute work replays on: as recorded, PM4 queues' work on AQL queues (aql), or AQL "
                   "queues' packets as PM4 packets on PM4 queues (pm4).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--timeline", metavar="OUT", type=click.Path(dir_okay=False),
              help="Write a timeline of the replay, with the times it took, for ui.perfetto.dev "
                   "(as kfdtrace export --perfetto draws the recording).")
@click.option("--debug", is_flag=True, help="Show the traceback of an internal error.")
@click.version_option(package_name="kfdtrace")
def main(trace, emulate, emulate_from, emulate_recorded, device, gpu_map, loop, concurrent, verify, relocate,
         timeout, max_memory, code_object, code_objects, queue_type, as_json, timeline, debug) -> None:
    """Replay TRACE on this machine's GPUs (or emulated ones) and say whether it did the same thing.

    \b
    Exit status: 0 ok; 1 diverged (a checkpoint, or a wait the recording timed out on completed);
    2 hang (a wait timed out, a queue did not drain, the GPU stopped a queue); 3 cannot replay on this
    target (nothing submitted); 4 bad input; 5 internal error (please report; --debug shows the traceback);
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
    extracted: dict[str, str] = {}  # a bundle's temporary folder -> how messages name it
    signal.signal(signal.SIGTERM, _terminated)
    try:
        from kfdtrace.replay.bundle import trace_of
        from kfdtrace.replay.code_objects import parse_code_object_options
        from kfdtrace.replay.engine import Options
        from kfdtrace.replay.session import replay_trace

        mapping = parse_gpu_map(gpu_map)
        memory_limit = parse_size(max_memory)
        check_options(emulate, emulate_from, emulate_recorded, device, mapping, loop, concurrent, relocate,
                      timeout)
        if timeline is not None:  # refused now, not after the replay
            try:
                check_output("--timeline", timeline, "the timeline")
                another_file(timeline, trace, "the timeline", regular=False)
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
        try:
            objects = parse_code_object_options(list(code_object), code_objects)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        options = Options(relocate=relocate, timeout=timeout, verify=verify, gpu_map=mapping, code_objects=objects,
                          queue_type=None if queue_type == "recorded" else queue_type)
        with TerminalProgress("replay") as progress, trace_of(trace) as (path, bundled):
            if path != trace:  # a bundle's, extracted into a temporary folder
                extracted[os.path.dirname(path) + os.sep] = f"{trace} member "
            if bundled is not None and code_objects is None:  # a bundle's code objects, unless others are given
                options.code_objects = parse_code_object_options(list(code_object), bundled)
            report = replay_trace(path, options, emulate=emulate, emulate_from=emulate_from,
                                  emulate_recorded=emulate_recorded, device=device, loops=loop,
                                  concurrent=concurrent, max_memory=memory_limit, progress=progress.update,
                                  timeline=timeline)
    except Terminated:
        _stopped(as_json, "terminated", 128 + signal.SIGTERM)
    except KeyboardInterrupt:
        _stopped(as_json, "interrupted", 128 + signal.SIGINT)
    except Exception as exc:
        _fail(as_json, exc, debug, extracted)
    try:
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2))
        else:
            for line in report.lines():
                click.echo(printable(line))  # names, notes and paths are the trace's
        sys.stdout.flush()
    except OSError as exc:  # a full disk, a closed pipe: the status still tells the verdict
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        click.echo(f"replay: the report was not written: {exc.strerror or exc}; the exit status is its verdict "
                   f"({report.status})", err=True)
    sys.exit(report.status)


class Terminated(BaseException):
    """SIGTERM, raised where the main thread is, as Ctrl-C raises KeyboardInterrupt."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def _stopped(as_json: bool, how: str, status: int) -> None:
    """One line saying the replay was stopped before its verdict (no status of the table is one), then exit."""
    line = f"replay: {how} before the replay ended: no verdict"
    if as_json:
        click.echo(json.dumps({"status": status, "error": line}))
    click.echo(line, err=True)
    sys.exit(status)


def _fail(as_json: bool, exc: Exception, debug: bool, renamed: dict[str, str] | None = None) -> None:
    """One line on stderr (and the JSON report's status) for `exc`, then exit with its status; `renamed`: paths
    in the message to name otherwise (a bundle's temporary folder, gone by now, by the bundle)."""
    from kfdtrace.replay.engine import EXIT_INTERNAL

    status, kind = next(((s, k) for types, s, k in failures() if isinstance(exc, types)), (EXIT_INTERNAL, None))
    message = one_line(exc.message if isinstance(exc, click.BadParameter) else exc)  # names from the trace
    for path, name in (renamed or {}).items():
        message = message.replace(path, name)
    if kind is None:
        if debug:
            traceback.print_exc()
        line = f"replay: internal error: {type(exc).__name__}: {message} (please report; --debug shows the traceback)"
    else:
        line = f"replay: {kind}: {message}"
    if as_json:
        click.echo(json.dumps({"status": status, "error": line}))
    click.echo(line, err=True)
    sys.exit(status)


def entry(standalone_mode: bool = True) -> object:
    """The `replay` console script: `replay campaign ...` runs a campaign (a trace file named "campaign" is
    given as ./campaign), anything else replays one trace (`standalone_mode` as click's)."""
    if sys.argv[1:2] == ["campaign"]:
        from kfdtrace.replay.campaign import campaign

        return campaign(args=sys.argv[2:], prog_name="replay campaign", standalone_mode=standalone_mode)
    return main(standalone_mode=standalone_mode)


if __name__ == "__main__":
    entry()

