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
    """Load the `module:function` `command` and run it; `keep_sigterm`: leave SIGTERM raising until the command
    installs its own handler (replay's does first thing), else give it back its default once loaded."""
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        module, function = command.split(":")
        run = getattr(importlib.import_module(module), function)
        if not keep_sigterm:
            signal.signal(signal.SIGTERM, before)
        run()
    except _Terminated:
        stopped("terminated", 128 + signal.SIGTERM)
    except KeyboardInterrupt:
        stopped("interrupted", 128 + signal.SIGINT)


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
    _run("kfdtrace.cli:main", _said("kfdtrace"), keep_sigterm=False)


def capture() -> None:
    _run("kfdtrace.capture.cli:main", _said("capture"), keep_sigterm=False)


def replay() -> None:
    _run("kfdtrace.replay.cli:entry", _replay_stopped, keep_sigterm=True)
