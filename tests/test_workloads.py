"""The workload matrix (issue 7): every workload in tests/workloads, in every mode.

- plain: run in-process on each emulated family (2-GPU workloads on same-family pairs and a mixed pair);
- capture: recorded in-process with kfdtrace.capture.record on two families per workload (rotated, so every
  family records some), the workload must succeed, `kfdtrace info --check` must pass on the trace, and every
  record must be exactly what the record table declares (no type or field it does not name);
- replay: each trace replayed on all five families, with relocate="always", and with two loops of two
  concurrent instances: status 0, submissions > 0, and every instance verified at least one checkpoint.
  Where the target cannot hold what the trace allocated (VRAM exhaustion recorded on a bigger board, or two
  concurrent instances of it), the documented outcome instead: exit 3, reported before anything is submitted
  (replay_trace raises ReplayError).

Each workload is recorded once per capture family (module-scoped cache) and the trace is reused by every replay.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest
from click.testing import CliRunner

from kfdtrace.capture import record
from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.driver import System
from kfdtrace.driver.emulator.boards import emulated_topology, parse_emulate_spec
from kfdtrace.replay.engine import EXIT_OK, EXIT_UNSUPPORTED, Options
from kfdtrace.replay.session import Report, replay_trace
from kfdtrace.replay.translate import ReplayError
from kfdtrace.traces import records as R
from kfdtrace.traces.format import TraceReader
from tests.workloads import ALL

FAMILIES = ["gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1201"]
REPLAY_TIMEOUT = 5.0  # seconds a replayed wait may take: the workloads' waits take milliseconds
DEADLINE = 20.0  # seconds a whole run, capture or replay may take before it counts as hung
T = TypeVar("T")


def workload(name: str):
    return importlib.import_module(f"tests.workloads.{name}")


class Failed(AssertionError):
    """A failure whose traceback was formatted on the spot (see run_workload)."""


def within(seconds: float, what: str, fn: Callable[[], T]) -> T:
    """fn() in a daemon thread: its result or its exception, or Failed with every thread's stack when it is
    still running after `seconds` (a deadlock in the library fails this test instead of stalling the matrix;
    the stuck thread is left behind)."""
    box: list = []

    def body() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:
            box.append((False, exc))

    t = threading.Thread(target=body, name=f"deadline: {what}", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        frames = sys._current_frames()
        me = threading.current_thread()
        stacks = "\n".join(f"--- thread {th.name}\n" + "".join(traceback.format_stack(frames[th.ident]))
                           for th in threading.enumerate() if th.ident in frames and th is not me)
        raise Failed(f"{what} did not finish in {seconds:g} s (hung); threads:\n{stacks}")
    ok, value = box[0]
    if not ok:
        raise value
    return value


def run_workload(name: str, system: System) -> None:
    """Run the workload; a failure becomes Failed carrying the formatted traceback. Formatting happens here,
    while the system is open: pytest would later repr the frames' arguments, and a Semaphore's or a queue's
    repr reads GPU memory that System.close() has unmapped by then (a segfault that ends the whole run)."""
    try:
        workload(name).run(system)
    except Exception as exc:
        raise Failed(f"{name}: {type(exc).__name__}: {exc}\n\n{''.join(traceback.format_exception(exc))}") from None


def gpus(name: str) -> int:
    return getattr(workload(name), "GPUS", 1)


def machine(family: str, n: int) -> str:
    return ",".join([family] * n)


def plain_specs(name: str) -> list[str]:
    n = gpus(name)
    specs = [machine(f, n) for f in FAMILIES]
    return specs + (["gfx942,gfx1100"] if n == 2 else [])


# Two capture machines per workload: rotated over the families (so each family records some workloads), except
# where the workload says what it needs (VRAM exhaustion: a small and a big board; peer copies: two pairs).
CAPTURES: dict[str, tuple[str, str]] = {
    "vram_exhaustion": ("gfx1030", "gfx942"),
    "peer_copy": ("gfx942,gfx942", "gfx942,gfx1100"),
}
for _i, _name in enumerate(ALL):
    CAPTURES.setdefault(_name, (FAMILIES[_i % 5], FAMILIES[(_i + 2) % 5]))


def family_of(spec: str) -> str:
    return spec.split(",")[0]


def replay_modes(name: str, capture: str) -> list[tuple[str, str, Options, int, int]]:
    """(mode id, target machine, options, loops, concurrent) for one trace."""
    n, i = gpus(name), FAMILIES.index(family_of(capture))
    modes = [("replay", machine(f, n), Options(timeout=REPLAY_TIMEOUT), 1, 1) for f in FAMILIES]
    other = machine(FAMILIES[(i + 1) % 5], n)
    modes.append(("relocate-always", other, Options(relocate="always", timeout=REPLAY_TIMEOUT), 1, 1))
    other = machine(FAMILIES[(i + 3) % 5], n)
    modes.append(("loop2-concurrent2", other, Options(timeout=REPLAY_TIMEOUT), 2, 2))
    return modes


PLAIN = [pytest.param(w, s, id=f"{w}-{s}") for w in ALL for s in plain_specs(w)]
CAPTURE = [pytest.param(w, c, id=f"{w}-{c}") for w in ALL for c in CAPTURES[w]]
REPLAY = [pytest.param(w, c, target, options, loops, concurrent, id=f"{w}-{c}-{mode}@{target}")
          for w in ALL for c in CAPTURES[w] for mode, target, options, loops, concurrent in replay_modes(w, c)]


# -- recording ----------------------------------------------------------------------------------------------
class Traces:
    """Each (workload, capture machine) recorded once, on first use; later uses get the same trace, or the
    capture's failure again."""

    def __init__(self, tmp_path_factory):
        self.dir = tmp_path_factory.mktemp("workload-traces")
        self.made: dict[tuple[str, str], tuple[str, BaseException | None]] = {}

    def get(self, name: str, spec: str) -> tuple[str, BaseException | None]:
        key = (name, spec)
        if key not in self.made:
            path = str(self.dir / f"{name}-{spec.replace(',', '+')}.kfdtrace")
            error = None
            def capture() -> None:
                with record(path, name=f"{name} on {spec}"), System.open(emulate=spec) as system:
                    run_workload(name, system)

            try:
                within(DEADLINE, f"recording {name} on {spec}", capture)
            except Exception as exc:  # kept, and re-raised by every test that needs this trace
                error = exc
            self.made[key] = (path, error)
        return self.made[key]

    def trace(self, name: str, spec: str) -> str:
        """The trace, for a test that needs a recording that succeeded."""
        path, error = self.get(name, spec)
        if error is not None:
            pytest.fail(f"recording {name} on {spec} failed, so there is no trace to replay: "
                        f"{type(error).__name__}: {error}", pytrace=False)
        return path


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Traces:
    return Traces(tmp_path_factory)


# -- replay outcomes ----------------------------------------------------------------------------------------
def peak_vram(path: str) -> dict[int, int]:
    """Recorded gpu_id -> the most VRAM the recorded program held at once."""
    live: dict[int, tuple[int, int]] = {}  # va -> (gpu, size)
    used: dict[int, int] = {}
    peak: dict[int, int] = {}
    with TraceReader(path) as r:
        for rec in r.records({"alloc", "free"}):
            f = rec.fields
            if rec.type == "alloc" and f["domain"] == "vram":
                live[f["va"]] = (f["gpu"], f["size"])
                used[f["gpu"]] = used.get(f["gpu"], 0) + f["size"]
                peak[f["gpu"]] = max(peak.get(f["gpu"], 0), used[f["gpu"]])
            elif rec.type == "free" and f["va"] in live:
                gpu, size = live.pop(f["va"])
                used[gpu] -= size
        gpu_ids = [g["gpu_id"] for g in r.header["gpus"]]
    return {g: peak.get(g, 0) for g in gpu_ids}


def fits(path: str, target: str, concurrent: int) -> bool:
    """Whether `concurrent` instances of the trace's VRAM fit the target machine (recorded GPU i -> device i)."""
    boards = emulated_topology(parse_emulate_spec(target)).gpus
    return all(concurrent * need <= boards[i].vram_size for i, need in enumerate(peak_vram(path).values()))


@dataclass
class Outcome:
    status: int
    report: Report | None
    error: ReplayError | None
    progress: list[str]

    @property
    def submitted(self) -> bool:
        """Whether the replay got as far as running a loop (it submits from its first loop on)."""
        return any(p.startswith("loop") for p in self.progress)


def replay(path: str, target: str, options: Options, loops: int = 1, concurrent: int = 1) -> Outcome:
    """replay_trace as the `replay` command's exit status: ReplayError is exit 3 (cannot run on this target);
    any other exception propagates."""
    progress: list[str] = []
    try:
        report = within(DEADLINE, f"replay of {path} on {target}",
                        lambda: replay_trace(path, options, emulate=target, loops=loops, concurrent=concurrent,
                                             progress=progress.append))
    except Failed:
        raise
    except ReplayError as exc:
        return Outcome(EXIT_UNSUPPORTED, None, exc, progress)
    except Exception as exc:  # formatted now: the frames hold objects whose repr reads unmapped memory
        raise Failed(f"replay on {target} raised {type(exc).__name__}: {exc} (progress: {progress})\n\n"
                     f"{''.join(traceback.format_exception(exc))}") from None
    return Outcome(report.status, report, None, progress)


# -- the matrix ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, spec", PLAIN)
def test_plain(name, spec):
    def plain() -> None:
        with System.open(emulate=spec) as system:
            run_workload(name, system)

    within(DEADLINE, f"{name} on {spec}", plain)


@pytest.mark.parametrize("name, spec", CAPTURE)
def test_capture(traces, name, spec):
    path, error = traces.get(name, spec)
    if error is not None:
        raise error
    res = CliRunner().invoke(kfdtrace_cli, ["info", "--check", path])
    assert res.exit_code == 0, f"kfdtrace info --check {path}: {res.output}"
    assert "frames are intact" in res.output and "RECOVERED" not in res.output, res.output
    with TraceReader(path) as r:
        assert not r.recovered and r.summary and r.summary["exit_status"] == 0, r.summary
        assert r.submissions > 0
        assert r.counts.get("checkpoint", 0) > 0, f"no checkpoint in {path}: {r.counts}"
        assert [g["target"] for g in r.header["gpus"]] == spec.split(",")
        R.check_map("header", r.header, R.HEADER)
        R.check_map("summary", r.summary, R.SUMMARY)
        assert sum(1 for _ in R.checked(r.records(), strict=True)) == r.record_count


@pytest.mark.parametrize("name, capture, target, options, loops, concurrent", REPLAY)
def test_replay(traces, name, capture, target, options, loops, concurrent):
    path = traces.trace(name, capture)
    out = replay(path, target, options, loops, concurrent)
    if not fits(path, target, concurrent):
        assert out.status == EXIT_UNSUPPORTED, (
            f"{concurrent} instance(s) of a trace holding {peak_vram(path)} bytes of VRAM cannot fit {target}: "
            f"expected exit 3 (cannot replay on this target), got {out.status}: "
            + "\n".join(out.report.lines() if out.report else []))
        assert not out.submitted, f"exit 3 came after the replay started submitting: {out.progress}; {out.error}"
        return
    assert out.error is None, f"replay refused the trace: {out.error}"
    report = out.report
    assert report.status == EXIT_OK, report.lines()[-1] + "\n" + "\n".join(report.lines()[:-1])
    assert report.submissions > 0
    assert len(report.loops) == loops and all(len(loop) == concurrent for loop in report.loops), report.lines()
    for k, result in enumerate(report.results):
        assert result.submissions == report.submissions, f"instance {k}: {result}"
        assert result.verified > 0, f"instance {k} verified no checkpoint: {result}"
    if options.relocate == "always":
        assert all(r.relocated > 0 for r in report.results), report.lines()


def test_exhaustion_trace_is_refused_by_the_replay_command(traces):
    """The command-line view of the refusal: exit 3, said before the first loop."""
    path = traces.trace("vram_exhaustion", "gfx942")
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", path, "--emulate", "gfx1030"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == EXIT_UNSUPPORTED, res.stdout + res.stderr
    assert "cannot replay here" in res.stderr and "loop 1" not in res.stdout, res.stdout + res.stderr
