"""`replay_trace`: open the target, survey the whole trace and check the target can hold it, then replay it
(looped, or several instances at once)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from kfdtrace.driver.backend import open_syscalls
from kfdtrace.driver.errors import KfdTraceError
from kfdtrace.driver.system import System
from kfdtrace.driver.topology import Topology
from kfdtrace.replay.code_objects import CodeObjectOptions
from kfdtrace.replay.engine import (
    BadInput,
    Instance,
    Options,
    Result,
    check_resources,
    device_map,
    recorded_gpus,
    survey,
)
from kfdtrace.traces import records as R
from kfdtrace.traces.contents import EVENT_PAGE
from kfdtrace.traces.format import TraceReader

MEMINFO = "/proc/meminfo"
MAX_MEMORY_SHARE = 2  # the default --max-memory: MemAvailable / this


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
    target_gfx: list[str] = field(default_factory=list)  # each target device's gfx target, in device order
    asked: int = 1  # loops asked for (the replay stops after the first that fails)

    @property
    def results(self) -> list[Result]:
        return [r for loop in self.loops for r in loop]

    @property
    def status(self) -> int:
        return max((r.status for r in self.results), default=0)

    def to_dict(self) -> dict:
        return {
            "trace": self.trace, "status": self.status, "recorded_on": self.recorded, "target": self.target,
            "target_gfx": self.target_gfx, "backend": self.backend, "submissions": self.submissions,
            "packets": self.packets, "loops_asked": self.asked,  # the replay stops after a loop that fails
            "loops": [[{"status": r.status, "seconds": r.seconds, "submissions": r.submissions, "packets": r.packets,
                        "checkpoints": r.checkpoints, "verified": r.verified, "racy": r.racy, "unread": r.unread,
                        "relocated_buffers": r.relocated,
                        "cached_submissions": r.cached,
                        "left_with_work": r.left,
                        "divergence": r.divergence.to_dict() if r.divergence else None,
                        "difference": r.difference, "hang": r.hang, "notes": r.notes,
                        "occupancy": r.occupancy.to_dict() if r.occupancy else None} for r in loop]
                      for loop in self.loops],
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        results = self.results
        out = [f"replay {self.trace}: recorded on {', '.join(self.recorded)}; "
               f"target {', '.join(self.target)} ({self.backend})",
               f"{self.submissions} submissions, {self.packets} packets per run; {len(self.loops)} loop(s) x "
               f"{len(self.loops[0]) if self.loops else 0} instance(s)"
               + (f" (of {self.asked} loops asked: the replay stops after a loop that fails)"
                  if len(self.loops) < self.asked else "")]
        for i, loop in enumerate(self.loops):
            times = ", ".join(f"{r.seconds:.3f} s" for r in loop)
            out.append(f"loop {i + 1}: {times}; checkpoints {sum(r.verified for r in loop)} buffers verified "
                       f"at {sum(r.checkpoints for r in loop)} checkpoints"
                       + (f" ({racy} left out: a race decided them)" if (racy := sum(r.racy for r in loop)) else "")
                       + f"; {sum(r.relocated for r in loop)} buffers relocated" + (
                           f"; {cached} submissions launching kernels reused an earlier translation"
                           if (cached := sum(r.cached for r in loop)) else ""))
            out += occupancy_lines(i, loop)
        out += [f"note: {n}" for n in self.notes + sorted({n for r in results for n in r.notes})]
        failed = [(r, f" in loop {i + 1}, instance {k + 1}" if len(results) > 1 else "")
                  for i, loop in enumerate(self.loops) for k, r in enumerate(loop) if r.status]
        # the verdict is the exit status's, the worst of the instances' (campaign 109: a divergence named first
        # hid a hang the exit status said); the others' are said before it
        first, where = next((f for f in failed if f[0].status == self.status), (None, ""))
        out += [f"also {_verdict(r, at)}" for r, at in failed if r.status != self.status]
        left = sorted({label for r in results for label in r.left})
        # OK says what was compared: with no buffer verified, only that the GPU did not hang
        matched = "every checkpoint matched" if any(r.verified for r in results) else \
            "no checkpoint compared any memory (this replay's CPU reads none of what they hold)" \
            if any(r.unread for r in results) else \
            "no checkpoint compared any memory (the recording checked none of what the GPU wrote)"
        if first is None and left:
            out.append(f"OK: {matched}; {len(left)} queue(s) still had work when destroyed or at the "
                       f"end, as in the recording ({', '.join(left[:3])}{', ...' if len(left) > 3 else ''}); every "
                       f"other submission completed and every other queue drained")
        elif first is None:
            out.append(f"OK: every submission completed, every queue drained and {matched}")
        else:
            out.append(_verdict(first, where))
        return out


def _verdict(r: Result, where: str) -> str:
    """The verdict line of an instance that failed (`where`: in which loop and instance)."""
    if r.divergence:
        return f"DIVERGED{where}: {r.divergence.describe()}"
    if r.difference:
        return f"DIVERGED{where}: {r.difference}"
    return f"HANG{where}: {r.hang}"


def occupancy_lines(i: int, loop: list[Result]) -> list[str]:
    """Loop i's overlap and each queue's busy time (one figure per instance), when its trace has 2+ queues."""
    runs = [r.occupancy for r in loop if r.occupancy]
    labels = list(dict.fromkeys(q.label for o in runs for q in o.queues))
    if len(labels) < 2:
        return []
    busy = {label: ["-"] * len(runs) for label in labels}
    for k, o in enumerate(runs):
        for q in o.queues:
            busy[q.label][k] = f"{q.busy_s * 1e3:.1f}"
    overlap = ", ".join(f"{o.overlap:.0%}" for o in runs)
    any_busy = ", ".join(f"{o.busy_any:.0%}" for o in runs)
    return [f"loop {i + 1} queues: overlap {overlap} (any busy {any_busy}); "
            + ", ".join(f"{label} {'/'.join(times)} ms" for label, times in busy.items())]


def host_available() -> int | None:
    """Bytes of memory the host can still give (MemAvailable), or None where the kernel does not say."""
    try:
        with open(MEMINFO) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def default_max_memory() -> int:
    """The host memory a replay may use unless told: half of MemAvailable (else of the RAM), leaving the rest
    to the emulated GPU's own copies, the trace reader and everything else running here."""
    available = host_available()
    if available is None:
        available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return available // MAX_MEMORY_SHARE


@contextlib.contextmanager
def bad_input() -> Iterator[None]:
    """Errors setting up (the trace's header, the target asked for) are bad input."""
    try:
        yield
    except (KfdTraceError, ValueError, OSError) as exc:
        raise BadInput(str(exc)) from exc


def open_target(trace: TraceReader, emulate: str | None, emulate_from: str | None, emulate_recorded: bool) -> System:
    topology = recorded_topology(trace) if emulate_recorded else None
    return System(open_syscalls(emulate, emulate_from, topology=topology), event_page_va=recorded_event_page(trace))


def recorded_event_page(trace: TraceReader) -> int | None:
    """Where the recording's event page was: a System makes it as it opens, before anything is submitted."""
    for r in trace.records({R.BUFFER, R.DOORBELL}):
        if r.type == R.DOORBELL:
            return None
        if r.fields.get("role") == EVENT_PAGE and type(r.fields.get("va")) is int:
            return r.fields["va"]
    return None


def recorded_topology(trace: TraceReader) -> Topology:
    """The topology the trace was recorded on, with the GPUs the program saw (its header's `gpus`: those
    ROCR/HIP_VISIBLE_DEVICES left it, in its order) as its only GPUs; BadInput when its header holds none that
    can be read."""
    gpus = recorded_gpus(trace)  # checked first: BadInput naming a malformed field
    try:
        topology = Topology.from_dict(trace.header["topology"])
        by_id = {node.gpu_id: node for node in topology.gpus}
        seen = [by_id[g["gpu_id"]] for g in gpus]
    except Exception as exc:  # anything a malformed dict makes from_dict raise, or a GPU it does not hold
        raise BadInput(f"{trace.path}: the header's topology cannot be read ({type(exc).__name__}: {exc}); "
                       f"use --emulate instead of --emulate-recorded") from None
    topology.nodes = [node for node in topology.nodes if not node.is_gpu] + seen
    return topology


def replay_trace(path: str, options: Options, *, emulate: str | None = None, emulate_from: str | None = None,
                 emulate_recorded: bool = False, device: int | None = None, loops: int = 1, concurrent: int = 1,
                 max_memory: int | None = None, progress: Callable[[str], None] = lambda text: None,
                 timeline: str | None = None) -> Report:
    """Replay the trace at `path`. Before anything is submitted: ReplayError when it cannot run on the target
    (packets, GPUs, memory: at most `max_memory` bytes of host memory, default_max_memory() when None),
    BadInput (or TraceError) when there is nothing sound to replay. `timeline`: where to write the first
    instance's timeline, as `kfdtrace export --perfetto` draws the recording's, with the times the replay took."""
    options.timed = timeline is not None
    readers = [TraceReader(path)]  # the others once the trace is known to fit `concurrent` times
    try:
        trace = readers[0]
        if trace.damage is not None:  # (a trace cut short is no damage: its records up to the cut replay)
            damage = trace.damage.removesuffix(" (corrupt trace)")
            raise BadInput(f"{path}: {damage} (corrupt trace): the records past it are not read, and a replay of "
                           f"those before would judge a part as the whole (`kfdtrace info --check` says the same)")
        with bad_input():
            system = open_target(trace, emulate, emulate_from, emulate_recorded)
        with system:
            gpus = recorded_gpus(trace)
            if device is not None:
                options.gpu_map = {i: device for i in range(len(gpus))}
            devices = device_map(trace, system, options.gpu_map, by_id=emulate_recorded)
            progress("checking every submission")
            s = survey(trace, devices, options.code_objects, options.queue_type)
            if not s.submissions:
                raise BadInput(f"{path} holds no submissions: nothing to replay")
            check_resources(s, system, concurrent, default_max_memory() if max_memory is None else max_memory)
            readers += [TraceReader(path) for _ in range(concurrent - 1)]
            report = Report(path, [g["target"] for g in gpus],
                            [f"{d}" for d in system.devices], system.backend, s.submissions, s.packets,
                            notes=s.notes, target_gfx=[d.target.name for d in system.devices], asked=loops)
            if trace.recovered:
                report.notes.append(trace.recovery_note)
            try:
                for i in range(loops):
                    progress(f"loop {i + 1}/{loops}")
                    report.loops.append(run_instances(
                        [Instance(readers[k], system, devices, s, options, move_all=k > 0, side_by_side=concurrent)
                         for k in range(concurrent)]))
                    if report.status:
                        break
            finally:
                s.release()
            if timeline is not None:
                from kfdtrace.traces.export import export_perfetto

                try:
                    export_perfetto(trace, timeline, times=report.loops[0][0].times or {},
                                    source=f"kfdtrace replay on {', '.join(report.target)}")
                except OSError as exc:  # checked before the replay, but a disk fills: the verdict stands
                    report.notes.append(f"the timeline was not written: {timeline}: {exc.strerror}")
            return report
    finally:
        for r in readers:
            r.close()


def run_instances(instances: list[Instance]) -> list[Result]:
    """Run the instances at once, one thread each; an exception in any is raised here once all are done."""
    results: list[Result | BaseException | None] = [None] * len(instances)

    def one(k: int) -> None:
        try:
            results[k] = instances[k].run()
        except BaseException as exc:  # handed to the calling thread below
            results[k] = exc

    threads = [threading.Thread(target=one, args=(k,), name=f"replay instance {k}") for k in range(1, len(instances))]
    for t in threads:
        t.start()
    try:
        one(0)
        if isinstance(results[0], BaseException) and not isinstance(results[0], Exception):  # Ctrl-C, SIGTERM
            raise results[0]
        for t in threads:
            t.join()
    except BaseException:
        for instance in instances:  # the others stop at their next record or look of a wait
            instance.halt.set()
        for t in threads:
            t.join()
        raise
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    if failed is not None:
        raise failed
    return results


def contents_at(path: str, submission: int, vas: list[int], *, emulate: str | None = None,
                timeout: float = 10.0, code_objects: CodeObjectOptions | None = None) -> dict[int, bytes]:
    """The contents of the buffers recorded at `vas` when the trace at `path` makes its submission `submission`,
    found by replaying it that far (on the GPUs it was recorded on, emulated, unless `emulate` names others,
    with `code_objects` for their targets). ReplayError or BadInput when it cannot replay, or a queue stands
    still in a submission before that one; WaitTimeout when it hangs on the way."""
    options = Options(timeout=timeout, code_objects=code_objects)
    with TraceReader(path) as trace:
        with bad_input():
            system = open_target(trace, emulate, None, emulate is None)
        with system:
            devices = device_map(trace, system, None, by_id=emulate is None)
            s = survey(trace, devices, options.code_objects)
            check_resources(s, system, 1, default_max_memory())
            try:
                return Instance(trace, system, devices, s, options).contents_at(submission, vas)
            finally:
                s.release()
