"""`replay campaign`: replay many traces on many GPUs, real or emulated, as Ray tasks and gather one verdict.

One Ray task per (trace, target, loop batch). A task asks for a custom Ray resource named after its target
(`{"gfx942": 1}` per recorded GPU, divided by --per-gpu), replays in a subprocess (`replay TRACE --emulate ...
--json`) it kills at --task-timeout, and returns one row. With --hardware a task also asks for Ray's own GPUs
(`num_gpus`) and replays, without --emulate, on the ones Ray assigned it: the child sees only those
(HIP_VISIBLE_DEVICES, which the driver honours as ROCm does), and a row whose GPUs are not of its target's
family is reported as "cannot run". Ray is imported only here, when a campaign runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import html
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass

import click

from kfdtrace.cli import Seconds, code_object_options
from kfdtrace.replay.status import EXIT_BAD_INPUT, EXIT_HANG, EXIT_INTERNAL, EXIT_OK, EXIT_UNSUPPORTED, VERDICTS

CANCELLED = "cancelled"
MAX_OBJECT_BYTES = 1 << 30  # code objects a campaign sends its workers, in all
OBJECT_SUFFIXES = (".co", ".hipfb")  # the files of a --code-objects folder a replay may look for
PR_SET_PDEATHSIG = 1  # prctl: the replay is killed with the worker (a cancelled task, a killed worker)
WAIT_S = 0.5  # the longest ray.wait, so that Ctrl-C is seen at once


@dataclass
class Unit:
    """One task's work: `loops` loops of a trace on one target per recorded GPU."""

    trace: str
    sha256: str
    target: str  # the --emulate spec, one family per recorded GPU, e.g. gfx942,gfx942
    batch: int
    loops: int


@dataclass(frozen=True)
class CodeObjects:
    """The code objects a campaign gives each replay (--code-object, and the code objects of a --code-objects
    folder), as bytes: they travel to the workers with the tasks, as the traces do."""

    given: tuple[tuple[str, str, bytes], ...] = ()  # (NAME_OR_HASH, file name, bytes) of each --code-object
    folder: tuple[tuple[str, bytes], ...] | None = None  # (file name, bytes) of the folder's code objects

    @classmethod
    def read(cls, pairs: list[str], directory: str | None) -> CodeObjects:
        """The options' files, checked as `replay` checks them; ValueError naming what is wrong."""
        from kfdtrace.replay.code_objects import parse_code_object_options

        options = parse_code_object_options(pairs, directory)
        given = tuple((g.selector, os.path.basename(g.path), g.data) for g in options.given)
        folder = None
        if directory is not None:
            folder = []
            for name in sorted(os.listdir(directory)):
                path = os.path.join(directory, name)
                if name.endswith(OBJECT_SUFFIXES) and os.path.isfile(path):
                    with open(path, "rb") as f:
                        folder.append((name, f.read()))
            folder = tuple(folder)
        total = sum(len(d) for *_, d in given) + sum(len(d) for _, d in folder or ())
        if total > MAX_OBJECT_BYTES:
            raise ValueError(f"the code objects given come to {total} bytes, more than the {MAX_OBJECT_BYTES} a "
                             f"campaign sends its workers: give only those the traces need")
        return cls(given, folder)

    def options(self, tmp: str) -> list[str]:
        """Write the objects into the folder `tmp`; the replay options that give them."""
        argv = []
        for i, (selector, name, data) in enumerate(self.given):
            path = os.path.join(tmp, f"given-{i}-{name}")
            with open(path, "wb") as f:
                f.write(data)
            argv += ["--code-object", f"{selector}={path}"]
        if self.folder is not None:
            folder = os.path.join(tmp, "code-objects")
            os.mkdir(folder)
            for name, data in self.folder:
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(data)
            argv += ["--code-objects", folder]
        return argv


@dataclass
class Row:
    """What one task found (status None: cancelled before it finished)."""

    trace: str
    target: str
    batch: int
    loops: int
    status: int | None
    message: str = ""
    packets_per_s: float | None = None
    wall_s: float = 0.0
    node: str = ""
    host: str = ""
    attempts: int = 0
    backend: str = ""  # what the replay ran on: "kfd" (the node's GPUs) or "emulated"
    devices: str = ""  # the replay's target devices, e.g. "gpu0(gfx942, id 0x1234)"
    gpus: str = ""  # with --hardware: the ids of the GPUs Ray assigned the task

    @property
    def verdict(self) -> str:
        return CANCELLED if self.status is None else VERDICTS[self.status]


def recorded_targets(path: str) -> list[str]:
    """The targets of the GPUs the trace at `path` was recorded on, in order."""
    from kfdtrace.traces.format import TraceReader

    with TraceReader(path) as r:
        return [g["target"] for g in r.header["gpus"]]


def plan(traces: list[str], targets: list[str] | None, loops: int, batch: int) -> tuple[list[Unit], dict[str, bytes]]:
    """The units of a campaign and each trace's bytes, by sha256. Without `targets`, each trace replays on the
    targets it was recorded on; with them, on each given target (every recorded GPU on that family)."""
    units, blobs = [], {}
    for path in traces:
        with open(path, "rb") as f:
            data = f.read()
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        recorded = recorded_targets(path)
        specs = [",".join(recorded)] if not targets else [",".join([t] * len(recorded)) for t in targets]
        for spec in specs:
            units += [Unit(path, digest, spec, b, min(batch, loops - b * batch))
                      for b in range(math.ceil(loops / batch))]
    return units, blobs


def demand(target: str, per_gpu: int, hardware: bool = False) -> dict[str, float]:
    """The Ray resources a unit asks for: one of its family's per recorded GPU, and with `hardware` as many of
    Ray's own GPUs, shared by `per_gpu` tasks (Ray takes fractions only up to 1: more rounds up to whole GPUs)."""
    families = target.split(",")
    need: dict[str, float] = {"GPU": len(families)} if hardware else {}
    for family in families:
        need[family] = need.get(family, 0) + 1
    return {k: v / per_gpu if v / per_gpu <= 1 else math.ceil(v / per_gpu) for k, v in need.items()}


def feasible(need: dict[str, float], nodes: list[dict[str, float]]) -> bool:
    """Whether some node offers all of `need` (else Ray would keep the task pending for ever)."""
    return any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes)


def parse_report(stdout: str) -> dict:
    """A `replay --json` run's report ({} when it printed none)."""
    try:
        report = json.loads(stdout)
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


def outcome(code: int, report: dict, stderr: str) -> tuple[int, str, float | None]:
    """(status, the first divergence, hang or error text, packets/s) from a `replay --json` run's exit status,
    report and standard error."""
    if code not in range(len(VERDICTS)):
        tail = (stderr.strip().splitlines() or [f"exit status {code}"])[-1]
        return EXIT_INTERNAL, f"the replay died ({code}): {tail}", None
    results = [r for loop in report.get("loops", []) for r in loop]
    seconds = sum(r["seconds"] for r in results)
    rate = sum(r["packets"] for r in results) / seconds if seconds > 0 else None
    first = next((r for r in results if r["divergence"] or r["difference"] or r["hang"]), None)
    if first is not None:
        message = first["divergence"]["message"] if first["divergence"] else first["difference"] or first["hang"]
    else:
        message = report.get("error") or (stderr.strip().splitlines() or [""])[-1] if code else ""
    return code, message, rate


def wrong_gpus(unit: Unit, report: dict) -> str:
    """Why the GPUs a --hardware replay ran on do not stand for the unit's target ("" when they do)."""
    wanted = unit.target.split(",")
    got = report.get("target_gfx") or []
    if sorted(got[:len(wanted)]) == sorted(wanted):
        return ""
    return (f"Ray assigned GPUs {', '.join(map(str, got)) or 'none'}, not {unit.target}: give each node GPUs of one "
            "family and advertise them as that family's resource too (ray start --num-gpus N "
            "--resources '{\"gfx942\": N}')")


def replay_unit(unit: Unit, data: bytes | None, timeout: float, task_timeout: float, attempt: int,
                hardware: bool = False, objects: CodeObjects = CodeObjects()) -> Row:
    """Replay `unit` here, from `data` (its bytes through the object store) or, when None, its shared path;
    both are checked against the unit's sha256 first. The replay runs in a child process that dies with this
    worker and is killed at `task_timeout` (a hang); emulated, or with `hardware` on the GPUs Ray assigned this
    task (the only ones the child sees); given the code objects `objects`."""
    import ray

    from kfdtrace.driver.visible import ENV_HIP_VISIBLE

    row = Row(unit.trace, unit.target, unit.batch, unit.loops, None, node=ray.get_runtime_context().get_node_id(),
              host=socket.gethostname(), attempts=attempt)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kfdtrace-campaign-") as tmp:
        path = unit.trace
        if data is not None:
            path = os.path.join(tmp, os.path.basename(unit.trace))
            with open(path, "wb") as f:
                f.write(data)
        with open(path, "rb") as f:
            arrived = hashlib.sha256(f.read()).hexdigest()
        if arrived != unit.sha256:
            row.status, row.message = EXIT_BAD_INPUT, f"the trace arrived with sha256 {arrived}, not {unit.sha256}"
            return row
        libc = ctypes.CDLL(None, use_errno=True)
        argv = [sys.executable, "-m", "kfdtrace.replay.cli", path, "--json", "--loop", str(unit.loops),
                "--timeout", str(timeout), *objects.options(tmp)]
        env = dict(os.environ)
        if hardware:
            row.gpus = env[ENV_HIP_VISIBLE] = ",".join(map(str, ray.get_gpu_ids()))
        else:
            argv += ["--emulate", unit.target]
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=task_timeout, env=env,
                                 preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL))
            report = parse_report(res.stdout)
            row.status, row.message, row.packets_per_s = outcome(res.returncode, report, res.stderr)
            row.backend, row.devices = str(report.get("backend", "")), ", ".join(map(str, report.get("target", [])))
            if hardware and report and (why := wrong_gpus(unit, report)):
                row.status, row.message = EXIT_UNSUPPORTED, why
        except subprocess.TimeoutExpired:
            row.status, row.message = EXIT_HANG, f"killed after --task-timeout {task_timeout:g} s without a verdict"
    row.wall_s = time.monotonic() - start
    return row


def connect(address: str | None, units: list[Unit], hardware: bool = False) -> None:
    """Join the Ray cluster at `address` ("auto": the one this machine belongs to; "local", and None without
    RAY_ADDRESS: a new one here) unless this process has joined one. A new local cluster offers each family the
    units use as many emulated GPUs as the widest unit needs; with `hardware`, this machine's GPUs: Ray GPUs,
    and one resource of its family per GPU."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address != "local":
        ray.init(address=address, log_to_driver=False)
        return
    if hardware:
        families = local_gpus()
        ray.init(address="local", num_gpus=len(families), resources=dict(Counter(families)), log_to_driver=False)
        return
    gpus: dict[str, float] = {}
    for unit in units:
        for family, need in demand(unit.target, 1).items():
            gpus[family] = max(gpus.get(family, 0), need)
    ray.init(address="local", resources=gpus, log_to_driver=False)


def local_gpus() -> list[str]:
    """The gfx targets of the GPUs a program here sees (ROCR/HIP_VISIBLE_DEVICES applied), in order: the
    emulated default's without a GPU."""
    from kfdtrace.driver.backend import open_backend
    from kfdtrace.driver.families import target_by_version
    from kfdtrace.driver.topology import read_topology
    from kfdtrace.driver.visible import visible_gpus

    gpus = visible_gpus(read_topology(open_backend()).gpus, os.environ)
    return [target_by_version(n.gfx_target_version).name for n in gpus]


def node_resources() -> list[dict[str, float]]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n["Alive"]]


def run_campaign(units: list[Unit], blobs: dict[str, bytes], *, per_gpu: int = 1, timeout: float = 10.0,
                 task_timeout: float = 600.0, retries: int = 2, shared: bool = False, hardware: bool = False,
                 objects: CodeObjects = CodeObjects(),
                 on_row: Callable[[Row], None] = lambda row: None) -> tuple[list[Row], bool]:
    """Run every unit as a Ray task on the connected cluster: (one row per unit, in order; whether it was
    interrupted). Ctrl-C cancels what is outstanding; their rows are cancelled (status None). `hardware`:
    on the GPUs Ray assigns each task, not emulated ones; `objects`: the code objects every replay is given."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    class Attempts:
        """How many times each unit was started (Ray retries a task whose worker died)."""

        def __init__(self) -> None:
            self.counts: dict[int, int] = {}

        def start(self, k: int) -> int:
            self.counts[k] = self.counts.get(k, 0) + 1
            return self.counts[k]

        def count(self, k: int) -> int:
            return self.counts.get(k, 0)

    @ray.remote(max_retries=retries, retry_exceptions=False)
    def task(k: int, unit: Unit, data: bytes | None, counter, given: CodeObjects) -> Row:
        return replay_unit(unit, data, timeout, task_timeout, ray.get(counter.start.remote(k)), hardware, given)

    # on this node: a node that dies with the campaign's tasks must not take their attempt counts with it
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    counter = Attempts.options(scheduling_strategy=here).remote()
    refs = {} if shared else {digest: ray.put(data) for digest, data in blobs.items()}
    objects_ref = ray.put(objects)
    nodes = node_resources()
    rows: list[Row] = [Row(u.trace, u.target, u.batch, u.loops, None) for u in units]
    pending = {}
    try:
        for k, unit in enumerate(units):
            need = demand(unit.target, per_gpu, hardware)
            if not feasible(need, nodes):
                rows[k].status = EXIT_UNSUPPORTED
                rows[k].message = f"no node of the cluster offers the Ray resources {need}"
                on_row(rows[k])
                continue
            gpus = need.pop("GPU", 0)
            ref = task.options(resources=need, num_gpus=gpus).remote(k, unit, None if shared else refs[unit.sha256],
                                                                     counter, objects_ref)
            pending[ref] = k
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
            if not done:
                continue
            k = pending.pop(done[0])
            try:
                rows[k] = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                rows[k].status = EXIT_INTERNAL
                rows[k].message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
                rows[k].attempts = ray.get(counter.count.remote(k))
            on_row(rows[k])
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        return rows, True
    return rows, False


def worst(rows: list[Row]) -> int:
    """The campaign's exit status: its worst verdict (internal > bad input > cannot run > hang > diverged >
    ok, the replay's exit statuses in order)."""
    return max((r.status for r in rows if r.status is not None), default=EXIT_OK)


def nodes_summary(rows: list[Row]) -> dict[str, dict]:
    """Per node: its host, tasks and wall seconds, and how many tasks ended in each verdict."""
    out: dict[str, dict] = {}
    for r in rows:
        if not r.node:
            continue
        n = out.setdefault(r.node, {"host": r.host, "tasks": 0, "wall_s": 0.0, "verdicts": {}})
        n["tasks"] += 1
        n["wall_s"] += r.wall_s
        n["verdicts"][r.verdict] = n["verdicts"].get(r.verdict, 0) + 1
    return out


def traces_summary(rows: list[Row]) -> list[dict]:
    """Per trace and target, over its loop batches: the worst verdict and its message, the loops run, the
    loop-weighted packets/s of the batches that reported one, wall seconds and the nodes it ran on."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.trace, r.target), []).append(r)
    out = []
    for (trace, target), batch in groups.items():
        done = [r for r in batch if r.status is not None]
        bad = max(done, key=lambda r: r.status, default=None)
        rated = [r for r in done if r.packets_per_s is not None]
        weight = sum(r.loops for r in rated)
        out.append({
            "trace": trace, "target": target, "tasks": len(batch), "loops": sum(r.loops for r in done),
            "verdict": CANCELLED if len(done) < len(batch) and (bad is None or bad.status == EXIT_OK)
            else VERDICTS[bad.status if bad else EXIT_OK],
            "message": bad.message if bad and bad.status else "",
            "packets_per_s": sum(r.packets_per_s * r.loops for r in rated) / weight if weight else None,
            "wall_s": sum(r.wall_s for r in batch), "nodes": len({r.node for r in done if r.node}),
        })
    return out


def document(rows: list[Row], interrupted: bool) -> dict:
    """The campaign's JSON document."""
    return {"status": worst(rows), "verdict": VERDICTS[worst(rows)], "interrupted": interrupted,
            "results": [asdict(r) | {"verdict": r.verdict} for r in rows], "traces": traces_summary(rows),
            "nodes": nodes_summary(rows)}


def rate(packets_per_s: float | None) -> str:
    return "" if packets_per_s is None else f"{packets_per_s:.0f}"


def ran_on(row: dict) -> str:
    """A result's devices and backend, and the Ray GPU ids it was given (--hardware)."""
    text = f"{row['devices']} ({row['backend']})" if row["devices"] else row["backend"]
    return text + (f" Ray GPUs {row['gpus']}" if row["gpus"] else "")


def html_report(doc: dict) -> str:
    """One self-contained HTML page: the results table and the per-node summary (every string escaped)."""
    e = html.escape
    head = ["trace", "target", "batch", "loops", "verdict", "message", "packets/s", "wall s", "node", "host",
            "attempts", "ran on"]
    rows = "".join(
        f"<tr class=\"{e(r['verdict']).replace(' ', '-')}\"><td>{e(r['trace'])}</td><td>{e(r['target'])}</td>"
        f"<td>{r['batch']}</td><td>{r['loops']}</td><td>{e(r['verdict'])}</td><td>{e(r['message'])}</td>"
        f"<td>{rate(r['packets_per_s'])}</td><td>{r['wall_s']:.2f}</td>"
        f"<td>{e(r['node'][:12])}</td><td>{e(r['host'])}</td><td>{r['attempts']}</td>"
        f"<td>{e(ran_on(r))}</td></tr>"
        for r in doc["results"])
    traces = "".join(
        f"<tr class=\"{e(t['verdict']).replace(' ', '-')}\"><td>{e(t['trace'])}</td><td>{e(t['target'])}</td>"
        f"<td>{t['tasks']}</td><td>{t['loops']}</td><td>{e(t['verdict'])}</td><td>{e(t['message'])}</td>"
        f"<td>{rate(t['packets_per_s'])}</td><td>{t['wall_s']:.2f}</td><td>{t['nodes']}</td></tr>"
        for t in doc["traces"])
    nodes = "".join(
        f"<tr><td>{e(node[:12])}</td><td>{e(n['host'])}</td><td>{n['tasks']}</td><td>{n['wall_s']:.2f}</td>"
        f"<td>{e(', '.join(f'{v}: {c}' for v, c in sorted(n['verdicts'].items())))}</td></tr>"
        for node, n in doc["nodes"].items())
    title = f"replay campaign: {doc['verdict']}" + (" (interrupted: partial)" if doc["interrupted"] else "")
    style = ("body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;"
             "padding:2px 6px;text-align:left}.ok{background:#dfd}.diverged,.hang{background:#fdd}"
             ".cannot-run,.bad-input,.internal{background:#fcb}.cancelled{background:#eee}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{e(title)}</title><style>{style}</style>"
            f"</head><body><h1>{e(title)}</h1><h2>Traces</h2><table><tr><th>trace</th><th>target</th><th>tasks</th>"
            f"<th>loops</th><th>verdict</th><th>message</th><th>packets/s</th><th>wall s</th><th>nodes</th></tr>"
            f"{traces}</table><h2>Tasks</h2><table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{rows}"
            f"</table><h2>Nodes</h2><table><tr><th>node</th><th>host</th><th>tasks</th><th>wall s</th>"
            f"<th>verdicts</th></tr>{nodes}</table></body></html>\n")


def write_reports(doc: dict, json_out: str | None, html_out: str | None) -> None:
    if json_out:
        with open(json_out, "w") as f:
            json.dump(doc, f, indent=2)
    if html_out:
        with open(html_out, "w") as f:
            f.write(html_report(doc))


def row_line(row: Row) -> str:
    text = f"{row.verdict:<10} {row.trace} on {row.target} (batch {row.batch}, {row.loops} loop(s))"
    if row.node:
        text += f" {row.host} {row.wall_s:.2f} s" + (f" attempts {row.attempts}" if row.attempts > 1 else "")
        text += f" Ray GPUs {row.gpus}" if row.gpus else ""
    return text + (f": {row.message}" if row.message else "")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("traces", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--ray", "address", metavar="ADDRESS|auto|local",
              help="The Ray cluster: its address, auto (the one this machine joined) or local (start one here, "
                   "with emulated GPUs for the campaign's targets) [default: RAY_ADDRESS, else local].")
@click.option("--loops", type=click.IntRange(min=1), default=1, show_default=True,
              help="Loops of each trace on each target.")
@click.option("--batch", type=click.IntRange(min=1), help="Loops per task [default: all of them in one].")
@click.option("--per-gpu", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tasks sharing one GPU at a time.")
@click.option("--targets", help="Families to replay on, e.g. gfx942,gfx1100 [default: each trace's recorded ones].")
@click.option("--timeout", type=Seconds(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds a replay's wait may take (hang).")
@click.option("--task-timeout", type=Seconds(min=0, min_open=True), default=600.0, show_default=True,
              help="Seconds after which a task's replay is killed and reported as a hang.")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Times Ray retries a task whose worker or node died.")
@click.option("--hardware", is_flag=True,
              help="Replay on the nodes' own GPUs: each task also asks Ray for GPUs (num_gpus) and replays on "
                   "those Ray assigned it, not emulated ones.")
@click.option("--shared", is_flag=True,
              help="Workers read the traces at their paths (a shared file system) instead of the object store.")
@code_object_options
@click.option("--json", "json_out", metavar="OUT", type=click.Path(dir_okay=False), help="Write the JSON report.")
@click.option("--html", "html_out", metavar="OUT", type=click.Path(dir_okay=False), help="Write the HTML report.")
def campaign(traces, address, loops, batch, per_gpu, targets, timeout, task_timeout, retries, hardware, shared,
             code_object, code_objects, json_out, html_out) -> None:
    """Replay TRACES on a Ray cluster's GPUs (emulated, or its own with --hardware), one task per trace, target
    and loop batch.

    \b
    Exit status: the worst verdict: 0 ok, 1 diverged, 2 hang, 3 cannot run, 4 bad input, 5 internal;
    130 when interrupted (the partial report is still written).
    """
    try:
        import ray  # noqa: F401
    except ImportError:
        click.echo("replay campaign: error: Ray is not installed: pip install 'kfdtrace[fleet]'", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        from kfdtrace.cli import check_backend

        for target in targets.split(",") if targets else []:
            check_backend(target, None)
        units, blobs = plan(list(traces), targets.split(",") if targets else None, loops, batch or loops)
        objects = CodeObjects.read(list(code_object), code_objects)
    except Exception as exc:
        click.echo(f"replay campaign: error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        connect(address, units, hardware)
    except Exception as exc:  # whatever ray.init raises for an address it cannot join
        click.echo(f"replay campaign: cannot join the Ray cluster {address or ''}: {exc}", err=True)
        sys.exit(EXIT_UNSUPPORTED)
    rows, interrupted = run_campaign(units, blobs, per_gpu=per_gpu, timeout=timeout, task_timeout=task_timeout,
                                     retries=retries, shared=shared, hardware=hardware, objects=objects,
                                     on_row=lambda r: click.echo(row_line(r)))
    doc = document(rows, interrupted)
    write_reports(doc, json_out, html_out)
    click.echo(f"campaign: {len(rows)} task(s): {doc['verdict'].upper()}" + (" (interrupted)" if interrupted else ""))
    sys.exit(130 if interrupted else doc["status"])
