"""`replay_trace`: open the target, check the whole trace, then replay it (looped, or several at once)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from kfdtrace.driver.emulator.kfd import EmulatedMachine, EmulatedSyscalls
from kfdtrace.driver.system import System
from kfdtrace.driver.topology import Topology
from kfdtrace.replay.engine import Instance, Options, Result, check, device_map
from kfdtrace.traces.format import TraceReader


@dataclass
class Report:
    trace: str
    recorded: list[str]
    target: list[str]
    backend: str
    submissions: int
    packets: int
    loops: list[list[Result]] = field(default_factory=list)  # per loop, one result per concurrent instance
    notes: list[str] = field(default_factory=list)

    @property
    def results(self) -> list[Result]:
        return [r for loop in self.loops for r in loop]

    @property
    def status(self) -> int:
        return max((r.status for r in self.results), default=0)

    def to_dict(self) -> dict:
        return {
            "trace": self.trace, "status": self.status, "recorded_on": self.recorded, "target": self.target,
            "backend": self.backend, "submissions": self.submissions, "packets": self.packets,
            "loops": [[{"seconds": r.seconds, "submissions": r.submissions, "packets": r.packets,
                        "checkpoints": r.checkpoints, "verified": r.verified, "relocated_buffers": r.relocated,
                        "divergence": r.divergence.to_dict() if r.divergence else None, "hang": r.hang,
                        "notes": r.notes} for r in loop] for loop in self.loops],
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        results = self.results
        out = [f"replay {self.trace}: recorded on {', '.join(self.recorded)}; "
               f"target {', '.join(self.target)} ({self.backend})",
               f"{self.submissions} submissions, {self.packets} packets per run; {len(self.loops)} loop(s) x "
               f"{len(self.loops[0]) if self.loops else 0} instance(s)"]
        for i, loop in enumerate(self.loops):
            times = ", ".join(f"{r.seconds:.3f} s" for r in loop)
            out.append(f"loop {i + 1}: {times}; checkpoints {sum(r.verified for r in loop)} buffers verified "
                       f"at {sum(r.checkpoints for r in loop)} checkpoints; "
                       f"{sum(r.relocated for r in loop)} buffers relocated")
        out += [f"note: {n}" for n in self.notes + sorted({n for r in results for n in r.notes})]
        first = next((r for r in results if r.divergence or r.hang), None)
        if first is None:
            out.append("OK: every submission completed and every checkpoint matched")
        elif first.divergence:
            out.append(f"DIVERGED: {first.divergence.describe()}")
        else:
            out.append(f"HANG: {first.hang}")
        return out


def open_target(trace: TraceReader, emulate: str | None, emulate_from: str | None, emulate_recorded: bool) -> System:
    if emulate_recorded:
        topology = Topology.from_dict(trace.header["topology"])
        return System(EmulatedSyscalls(EmulatedMachine(topology)))
    return System.open(emulate, emulate_from)


def replay_trace(path: str, options: Options, *, emulate: str | None = None, emulate_from: str | None = None,
                 emulate_recorded: bool = False, device: int | None = None, loops: int = 1, concurrent: int = 1,
                 progress: Callable[[str], None] = lambda text: None) -> Report:
    """Replay the trace at `path`; ReplayError when it cannot run on the target (nothing submitted then)."""
    readers = [TraceReader(path) for _ in range(concurrent)]
    try:
        trace = readers[0]
        with open_target(trace, emulate, emulate_from, emulate_recorded) as system:
            if device is not None:
                options.gpu_map = {i: device for i in range(len(trace.header.get("gpus") or []))}
            devices = device_map(trace, system, options.gpu_map)
            progress("checking every submission")
            submissions, packets, notes = check(trace, devices)
            report = Report(path, [g["target"] for g in trace.header.get("gpus") or []],
                            [f"{d}" for d in system.devices], system.backend, submissions, packets, notes=notes)
            if trace.recovered:
                report.notes.append(trace.recovery_note)
            for i in range(loops):
                progress(f"loop {i + 1}/{loops}")
                results: list[Result | BaseException | None] = [None] * concurrent

                def one(k: int, results: list = results) -> None:
                    try:
                        results[k] = Instance(readers[k], system, devices, options, move_all=k > 0).run()
                    except BaseException as exc:  # handed to the main thread below
                        results[k] = exc

                threads = [threading.Thread(target=one, args=(k,)) for k in range(1, concurrent)]
                for t in threads:
                    t.start()
                one(0)
                for t in threads:
                    t.join()
                failed = next((r for r in results if isinstance(r, BaseException)), None)
                if failed is not None:
                    raise failed
                report.loops.append(results)
                if report.status:
                    break
            return report
    finally:
        for r in readers:
            r.close()
