"""Repeated captures (issue 7): the threaded workload (two and four submitting threads) and the large-write
workload, each recorded 30 times in one test run; every trace must pass `kfdtrace info --check` (the trace
reader's verify) and replay with status 0. Not a timing test: it looks for the failures that show up one run
in thirty (races in the recorder's ordering, checkpoints of work still in flight, torn flushes)."""

from __future__ import annotations

import os

import pytest

from kfdtrace.capture import record
from kfdtrace.driver import System
from kfdtrace.replay.engine import EXIT_OK, Options
from kfdtrace.traces.format import TraceReader
from tests.test_workloads import Failed, replay, within
from tests.workloads import large_writes, threads
from tests.workloads.common import MIB

REPEATS = 30
FAMILY = "gfx1100"  # recorded here, replayed on CDNA3: a cross-dialect replay every time
REPLAY_ON = "gfx942"
DEADLINE = 10.0  # seconds one recording may take (each takes well under one): longer is a hang
MAX_HANGS = 2  # then stop repeating: every further hang would cost DEADLINE

CASES = {
    "threads2": lambda system: (threads.run_threads(system, 2, False, rounds=4, size=16 << 10),
                                threads.run_threads(system, 2, True, rounds=4, size=16 << 10)),
    "threads4": lambda system: (threads.run_threads(system, 4, False, rounds=4, size=16 << 10),
                                threads.run_threads(system, 4, True, rounds=4, size=16 << 10)),
    "large_writes": lambda system: large_writes.run(system, size=8 * MIB, writes=4, rounds=1),
}


def record_once(path: str, case: str, seed: int) -> None:
    def body() -> None:
        with record(path, name=f"stress {case} #{seed}"), System.open(emulate=FAMILY) as system:
            try:
                CASES[case](system)
            except Exception as exc:  # formatted while the system is open (see test_workloads.run_workload)
                raise Failed(f"{case} #{seed}: {type(exc).__name__}: {exc}") from None

    within(DEADLINE, f"recording {case} #{seed}", body)


@pytest.mark.parametrize("case", list(CASES))
def test_repeated_capture_verifies_and_replays(tmp_path, case):
    failures: list[str] = []
    first: str | None = None  # the first failure in full (a hang's thread stacks)
    for i in range(REPEATS):
        path, ok = str(tmp_path / f"{case}-{i}.kfdtrace"), False
        try:
            record_once(path, case, i)
            with TraceReader(path) as r:
                r.verify()
                if r.recovered or not r.summary or r.summary.get("exit_status") != 0:
                    raise Failed(f"trace not closed cleanly: recovered={r.recovered} summary={r.summary}")
            out = replay(path, REPLAY_ON, Options(timeout=5.0))
            if out.status != EXIT_OK:
                detail = out.error if out.error else "; ".join(out.report.lines()[-2:])
                raise Failed(f"replay status {out.status}: {detail}")
            if out.report.submissions == 0 or out.report.results[0].verified == 0:
                raise Failed(f"replay ran {out.report.submissions} submissions and verified "
                             f"{out.report.results[0].verified} buffers")
            ok = True
        except Exception as exc:
            first = first or f"{type(exc).__name__}: {exc}"
            failures.append(f"run {i}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            if sum("did not finish" in f for f in failures) >= MAX_HANGS:
                failures.append(f"stopped after run {i}: {MAX_HANGS} recordings hung")
                break
        finally:
            if ok and os.path.exists(path):
                os.remove(path)  # keep only the traces of failed runs
    assert not failures, (f"{len(failures)} of {REPEATS} {case} captures failed:\n" + "\n".join(failures)
                          + f"\n\nthe first in full:\n{first}")
