"""The `replay` command: re-execute a trace here, verify it, or stress with it.

Exit status: 0 every submission completed and every checkpoint matched; 1 a checkpoint diverged; 2 a wait
timed out or the GPU stopped a queue (hang); 3 the trace cannot be replayed on this target; 4 bad input
(an unreadable trace, bad options).
"""

from __future__ import annotations

import json
import sys

import click

from kfdtrace.cli import TerminalProgress, backend_options
from kfdtrace.driver.errors import KfdTraceError
from kfdtrace.replay.engine import EXIT_UNSUPPORTED, Options
from kfdtrace.replay.session import replay_trace
from kfdtrace.replay.translate import ReplayError
from kfdtrace.traces.format import TraceError

EXIT_BAD_INPUT = 4


def parse_gpu_map(text: str | None) -> dict[int, int] | None:
    if not text:
        return None
    try:
        pairs = [item.split(":") for item in text.split(",")]
        return {int(a): int(b) for a, b in pairs}
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected recorded:target pairs such as 0:1,1:0") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("trace", type=click.Path(dir_okay=False))
@backend_options
@click.option("--emulate-recorded", is_flag=True, help="Emulate exactly the GPUs the trace was recorded on.")
@click.option("--device", type=int, help="Replay every recorded GPU's work on this target device.")
@click.option("--gpu-map", help="Recorded GPU index to target device index, e.g. 0:1,1:0.")
@click.option("--loop", type=int, default=1, show_default=True, help="Replay N times, from fresh inputs each time.")
@click.option("--concurrent", type=int, default=1, show_default=True,
              help="Run K independent instances at once, on separate buffers and queues.")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Compare the checkpoints.")
@click.option("--relocate", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds a wait may take (hang).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.version_option(package_name="kfdtrace")
def main(trace, emulate, emulate_from, emulate_recorded, device, gpu_map, loop, concurrent, verify, relocate,
         timeout, as_json) -> None:
    """Replay TRACE on this machine's GPUs (or emulated ones) and say whether it did the same thing."""
    try:
        mapping = parse_gpu_map(gpu_map)
        if device is not None and mapping is not None:
            raise click.BadParameter("give --device or --gpu-map, not both")
        if sum(bool(x) for x in (emulate, emulate_from, emulate_recorded)) > 1:
            raise click.BadParameter("give one of --emulate, --emulate-from, --emulate-recorded")
        if loop < 1 or concurrent < 1:
            raise click.BadParameter("--loop and --concurrent take 1 or more")
        if relocate == "never" and concurrent > 1:
            raise click.BadParameter("--relocate never keeps every buffer at its recorded address, so only one "
                                     "instance can run at a time: drop --concurrent or allow relocation")
        options = Options(relocate=relocate, timeout=timeout, verify=verify, gpu_map=mapping)
        with TerminalProgress("replay") as progress:
            report = replay_trace(trace, options, emulate=emulate, emulate_from=emulate_from,
                                  emulate_recorded=emulate_recorded, device=device, loops=loop,
                                  concurrent=concurrent, progress=progress.update)
    except click.BadParameter as exc:
        click.echo(f"replay: error: {exc.message}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except ReplayError as exc:
        _fail(as_json, "unsupported", str(exc), EXIT_UNSUPPORTED)
    except (TraceError, KfdTraceError, ValueError, OSError) as exc:
        _fail(as_json, "error", str(exc), EXIT_BAD_INPUT)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    sys.exit(report.status)


def _fail(as_json: bool, kind: str, message: str, status: int) -> None:
    if as_json:
        click.echo(json.dumps({"status": status, kind: message}))
    click.echo(f"replay: {'cannot replay here' if kind == 'unsupported' else 'error'}: {message}", err=True)
    sys.exit(status)


if __name__ == "__main__":
    main()

