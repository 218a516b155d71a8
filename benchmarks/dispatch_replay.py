"""Replay of dispatch traces: translation throughput with kernel execution excluded, and the whole replay's CPU
against the workload it replays, measured side by side in one run.

    python benchmarks/dispatch_replay.py [--runs 3] [--dispatches 2000] [--loops 3] [--emulate gfx942]

examples/many_dispatches.py (vector_add over 64 floats per dispatch; PM4 ten dispatches to a doorbell, AQL one) is
recorded once on each queue kind. Then, for each trace:

1. Dispatches per second the replayer translates, in this process on the recorded GPUs (emulated), each of --runs
   runs in a fresh system after one unmeasured run:
   - the survey (replay/engine.py `survey`): every submission translated with the recorded addresses and every
     dispatch checked (kernel, pointer arguments), nothing run; its record reading alone is also timed;
   - the run's translation: --loops `Instance`s replay the trace one after the other after the survey, as
     `replay --loop` does, and the time inside `Translator.ring` is summed for each. The first loop re-derives
     each dispatch for the target (`Instance._dispatch`: kernel arguments repacked into memory it allocates) and
     takes the other packets from the survey's cache; the loops after it take each submission that launches
     kernels whole from the memo the first filled (replay/dispatch_memo.py), checking what it read. The
     emulated shader runs the kernels on the engines' threads meanwhile, so the CPU of the translating thread is
     the figure (`time.thread_time`); its wall time, which includes waits for the GIL while the shader runs, is
     printed beside it, and so is the thread CPU less what timing each call costs itself (an empty interval
     timed the same way, in the same run: a thread_time call is a system call, about 1 µs, against the few µs
     of a cached dispatch). Target: >= 200k dispatches/s with cached translation (the loops after the first).
   - the same loops with kernel execution excluded, as the target is put: the emulated shader's `run_dispatch`
     is replaced, in this benchmark only, by one that runs nothing (so the dispatches complete at once, with
     nothing written), and the replay does not verify (its checkpoints would differ). Everything else runs as in
     a replay: the doorbells, the packet processor, the completion signals and the CPU's waits.
2. The whole `replay TRACE --emulate-recorded` CPU against the plain workload's (no capture), each its own
   process, alternately (user + system of the child, after one unmeasured run of each), as
   benchmarks/replay_cpu.py does, with the paired ratios (no target is set for dispatch traces).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from timing import paired_cpu

from kfdtrace.driver.emulator.shader import interpreter
from kfdtrace.replay.engine import Instance, Options, _Surveyor, device_map, handled, survey
from kfdtrace.replay.session import open_target
from kfdtrace.replay.translate import Translator
from kfdtrace.traces import records as R
from kfdtrace.traces.format import TraceReader

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "..", "examples", "many_dispatches.py")
TARGET = 200_000  # dispatches per second translated, with cached translation


class RingTimer:
    """Time spent inside `Translator.ring` (outermost calls, while `on`): wall and this thread's CPU."""

    def __init__(self) -> None:
        self.on = False
        self.depth = 0
        self.wall = self.cpu = 0.0
        self.calls = 0
        original = Translator.ring
        timer = self

        def ring(translator, data, where, writes=None):
            if not timer.on or timer.depth:
                return original(translator, data, where, writes)
            timer.depth += 1
            c0, t0 = time.thread_time(), time.perf_counter()
            try:
                return original(translator, data, where, writes)
            finally:
                timer.wall += time.perf_counter() - t0
                timer.cpu += time.thread_time() - c0
                timer.calls += 1
                timer.depth -= 1

        Translator.ring = ring

    def reset(self) -> None:
        self.wall = self.cpu = 0.0
        self.calls = 0

    @staticmethod
    def own_cost(n: int = 20_000) -> float:
        """Thread CPU seconds one timed call adds by timing itself: the timing of an empty interval, as `ring`
        times each call (thread_time is a system call, about 1 µs here: a dispatch's translation is a few)."""
        cpu = 0.0
        for _ in range(n):
            c0, t0 = time.thread_time(), time.perf_counter()
            time.perf_counter() - t0
            cpu += time.thread_time() - c0
        return cpu / n


def dispatches_of(trace: TraceReader) -> int:
    return sum(((trace.summary or {}).get("kernels") or {}).values())


def translation(path: str, timer: RingTimer, loops: int, run_kernels: bool = True) -> dict[str, float]:
    """One replay of the trace in `loops` loops in a fresh system: seconds of its survey, of reading the survey's
    records alone, and of the first loop and of each later one (on average): whole, its translation's wall and
    CPU. Without `run_kernels`, no kernel runs and nothing is verified."""
    with TraceReader(path) as trace:
        t0 = time.perf_counter()
        for _ in R.checked(trace.records(handled(_Surveyor))):
            pass
        reading = time.perf_counter() - t0
    idle = contextlib.nullcontext() if run_kernels else patched(interpreter, "run_dispatch", lambda *args: None)
    with idle, TraceReader(path) as trace, open_target(trace, None, None, True) as system:
        devices = device_map(trace, system, None)
        options = Options(verify=run_kernels)
        t0 = time.perf_counter()
        s = survey(trace, devices, options.code_objects)
        surveyed = time.perf_counter() - t0
        out = {"survey": surveyed, "reading": reading}
        try:
            for loop in range(loops):
                timer.reset()
                timer.on = True
                try:
                    result = Instance(trace, system, devices, s, options).run()
                finally:
                    timer.on = False
                if result.status:
                    raise SystemExit(f"replay of {path} failed (status {result.status}): "
                                     f"{result.hang or result.difference} "
                                     f"{result.divergence.describe() if result.divergence else ''}")
                if timer.calls != s.submissions:
                    raise SystemExit(f"{path}: {timer.calls} translations timed, {s.submissions} submissions")
                if loop and not result.cached:
                    raise SystemExit(f"{path}: loop {loop + 1} took no translation from the memo")
                key = "first" if loop == 0 else "later"
                own = timer.calls * RingTimer.own_cost()
                for name, value in (("run", result.seconds), ("ring_wall", timer.wall), ("ring_cpu", timer.cpu),
                                    ("ring_net", timer.cpu - own)):
                    out[f"{key}_{name}"] = out.get(f"{key}_{name}", 0.0) + value / (1 if loop == 0 else loops - 1)
        finally:
            s.release()
    return out


@contextlib.contextmanager
def patched(owner: object, name: str, value: object) -> Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def translation_rows(name: str, n: int, runs: list[dict[str, float]],
                     kernels: bool = True) -> list[tuple[str, str, str, str]]:
    """The table's rows for the translation runs of one trace of `n` dispatches (`kernels`: they were run; if
    not, the later loops' rows alone)."""
    per = {k: [run[k] for run in runs] for k in runs[0]}
    rate = {k: [n / v for v in values] for k, values in per.items()}

    def rates(key: str) -> str:
        return f"{spread(rate[key], ',.0f')} /s"

    def goal(key: str) -> str:
        return f"{statistics.median(rate[key]) / TARGET:.3f}x of the target >= {TARGET:,}/s"

    def share(key: str, of: str) -> str:
        return f"{statistics.median(per[key]) / statistics.median(per[of]):.0%} of the {of.split('_')[-1]}'s time"

    if not kernels:
        return [(name, "later loops (cached), no kernel run: translation, thread CPU", rates("later_ring_cpu"),
                 goal("later_ring_cpu")),
                (name, "  the same less the timer's own cost", rates("later_ring_net"), goal("later_ring_net")),
                (name, "  translation, wall", rates("later_ring_wall"), share("later_ring_wall", "later_run"))]
    rows = [(name, "survey (translate + check, nothing run)", rates("survey"), goal("survey")),
            (name, "  the survey's record reading alone", rates("reading"), share("reading", "survey"))]
    for key, what in (("first", "first loop"), ("later", "later loops (cached)")):
        if f"{key}_run" in per:
            rows += [(name, f"{what}: translation, thread CPU", rates(f"{key}_ring_cpu"), goal(f"{key}_ring_cpu")),
                     (name, f"{what}: the same less the timer's own cost", rates(f"{key}_ring_net"),
                      goal(f"{key}_ring_net")),
                     (name, f"{what}: translation, wall (GIL shared)", rates(f"{key}_ring_wall"),
                      share(f"{key}_ring_wall", f"{key}_run")),
                     (name, f"{what}: whole run, wall (kernels executed)", rates(f"{key}_run"), "")]
    return rows


def spread(values: list[float], fmt: str = ".3f") -> str:
    return " / ".join(f"{v:{fmt}}" for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dispatches", type=int, default=2000)
    ap.add_argument("--loops", type=int, default=3, help="loops of each replay (the first fills the memo)")
    ap.add_argument("--emulate", default="gfx942")
    args = ap.parse_args()
    # Bytecode is cached, as it is for an installed package (see replay_cpu.py).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["KFDTRACE_EMULATE"] = args.emulate
    timer = RingTimer()
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for queue, flags in (("PM4", []), ("AQL", ["--aql"])):
            workload = [sys.executable, WORKLOAD, "--dispatches", str(args.dispatches), *flags]
            trace = os.path.join(tmp, f"dispatches-{queue}.kfdtrace")
            subprocess.run([sys.executable, "-m", "kfdtrace.capture.cli", "run", "-o", trace, *workload[1:]],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, env=env)
            with TraceReader(trace) as r:
                n = dispatches_of(r)
            # 1. translation, in this process
            translation(trace, timer, 1)  # warm-up
            runs = [translation(trace, timer, args.loops) for _ in range(args.runs)]
            name = f"{queue} {n} dispatches"
            rows += translation_rows(name, n, runs)
            idle = [translation(trace, timer, args.loops, run_kernels=False) for _ in range(args.runs)]
            rows += translation_rows(name, n, idle, kernels=False)
            # 2. whole replay against the plain workload, each its own process
            replay = [sys.executable, "-m", "kfdtrace.replay.cli", trace, "--emulate-recorded"]
            plain, replayed = paired_cpu(workload, replay, env, args.runs)
            pairs = [r / p for p, r in zip(plain, replayed, strict=True)]
            rows += [(name, "plain workload CPU (child process)", f"{spread(plain)} s", ""),
                     (name, "whole replay CPU (child process)", f"{spread(replayed)} s", ""),
                     (name, "replay / plain CPU, paired", f"{spread(pairs, '.2f')}x",
                      "no target (replay_cpu.py's are <= 1.0x, 0.8x)")]
    print(f"dispatch replay on {args.emulate}, {args.runs} runs each, min / median / max (rates: dispatches per "
          f"second):")
    rows.insert(0, ("trace", "what", "min / median / max", "against"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(f"  {row[0]:{widths[0]}}  {row[1]:{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}")


if __name__ == "__main__":
    main()
