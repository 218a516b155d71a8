"""The console scripts. Each loads its command's modules (click, the trace format, ... a few tenths of a second)
with Ctrl-C and SIGTERM already handled, so one arriving then ends the program as one arriving later does: one
line on stderr and status 130 or 143 (replay's `--json` object too), never a traceback (campaign 99)."""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable


class _Terminated(BaseException):
    """SIGTERM before the command took it over."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated


def _run(command: str, stopped: Callable[[str, int], None], *, keep_sigterm: bool) -> None:
    """Load the `module:function` `command` (a click command, or a function taking `standalone_mode` as one does)
    and run it; `keep_sigterm`: leave SIGTERM raising until the command installs its own handler (replay's does
    first thing), else give it back its default once loaded. Click's own ending of a Ctrl-C ("Aborted!", status
    1) is this one's, as is its ending of a bad option."""
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        module, function = command.split(":")
        run = getattr(importlib.import_module(module), function)
        if not keep_sigterm:
            signal.signal(signal.SIGTERM, before)
        import click

        try:
            status = run(standalone_mode=False)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except BaseException as exc:
        how = _interruption(exc)
        if how is None:
            raise
        stopped(*how)
    sys.exit(status if isinstance(status, int) else 0)


def _interruption(exc: BaseException) -> tuple[str, int] | None:
    """How a Ctrl-C or SIGTERM among the causes of `exc` ended the program (one raised in a class's __set_name__
    comes wrapped in a RuntimeError: campaign 102; click wraps a Ctrl-C in Abort), or None."""
    import click

    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None:
            return None
        if isinstance(seen, _Terminated):
            return "terminated", 128 + signal.SIGTERM
        if isinstance(seen, KeyboardInterrupt | click.Abort):
            return "interrupted", 128 + signal.SIGINT
        seen = seen.__cause__ or seen.__context__
    return None


def _said(program: str) -> Callable[[str, int], None]:
    def stopped(how: str, status: int) -> None:
        print(f"{program}: {how}", file=sys.stderr)
        sys.exit(status)
    return stopped


def _replay_stopped(how: str, status: int) -> None:
    """As replay.cli._stopped says it (that module may be what was loading)."""
    line = f"replay: {how} before the replay ended: no verdict"
    if "--json" in sys.argv[1:]:
        import json

        print(json.dumps({"status": status, "error": line}))
    print(line, file=sys.stderr)
    sys.exit(status)


def kfdtrace() -> None:
    _run("kfdtrace.cli:main", _said("kfdtrace"), keep_sigterm=True)


def capture() -> None:
    _run("kfdtrace.capture.cli:main", _said("capture"), keep_sigterm=False)


def replay() -> None:
    _run("kfdtrace.replay.cli:entry", _replay_stopped, keep_sigterm=True)
