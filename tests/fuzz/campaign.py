"""A fuzzing campaign over the sample traces (issue 8): python -m tests.fuzz.campaign [--cases N] [--jobs J]
[--seed S] [--timeout SECONDS] [--keep DIR]

Each case is one sample and one seed (tests/fuzz/mutate.py builds the mutated trace); `replay TRACE --emulate
<the sample's GPUs> --timeout 2` (--emulate-recorded for odd seeds), `kfdtrace info --check TRACE` and the trace
tools (dump, dump --json --buffers, export --perfetto, diff, trim, redact: `commands`) each run in a child forked
from this process (kfdtrace is imported once, so a case costs milliseconds, not an interpreter start), under an
address-space limit and a wall-clock timeout. The table counts cases by their worst outcome: clean (exit 0-4, no
traceback), traceback, exit 5 (internal error), hang, memory-limit hit, crash (a signal, or an exit status outside
0-5), with the first few examples of each non-clean kind: seed, mutation, the last line of stderr.

Reproduce one case: python -m tests.fuzz.campaign --repro SAMPLE:SEED (writes /tmp/fuzz-SAMPLE-SEED.kfdtrace
and prints the commands to run on it).
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from kfdtrace.driver.memory import ENV_GUARD_PAGES
from tests.fuzz import mutate

MEMORY_LIMIT = 4 << 30
WALL_TIMEOUT = 30.0
KINDS = ("clean", "traceback", "exit 5", "hang", "memory", "crash")
WORST = {k: i for i, k in enumerate(KINDS)}


def on_recorded(seed: int) -> bool:
    """Whether a case replays on the GPUs its header records (odd seeds: the header's topology is input too) or
    on its sample's targets."""
    return seed % 2 == 1


def commands(trace: str, targets: str, out: str | None = None, recorded: bool = False) -> list[list[str]]:
    """The argv (after `python`) of the commands a case runs: replay (on `targets`, or on the GPUs the trace
    records), and every trace tool (writing to paths that start with `out`, by default next to the trace, removed
    with it)."""
    out = out or trace + ".out"
    tools = [["dump", trace], ["dump", "--json", trace, "--buffers", out + ".d"], ["export", trace, "--perfetto", out],
             ["diff", trace, trace], ["trim", trace, "-s", "0..", "-o", out + ".t"], ["redact", trace, "-o", out]]
    target = ["--emulate-recorded"] if recorded else ["--emulate", targets]
    return [["-m", "kfdtrace.replay.cli", trace, *target, "--timeout", "2"],
            ["-m", "kfdtrace", "info", "--check", trace], *(["-m", "kfdtrace", *t] for t in tools)]


def limit_memory(limit: int = MEMORY_LIMIT) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def classify(status: int | None, stderr: str) -> str:
    """status: the exit status, a negative signal number, or None for a hang (killed after the timeout)."""
    if status is None:
        return "hang"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory"
    if status < 0 or status > 5:
        return "crash"
    if "Traceback" in stderr:
        return "traceback"
    if status == 5:
        return "exit 5"
    return "clean"


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run_cli(argv: list[str], timeout: float = WALL_TIMEOUT, limit: int = MEMORY_LIMIT,
            executable: str = sys.executable) -> tuple[str, int | None, str]:
    """Run `python argv` in a child process with the address-space limit: (kind, status, stderr)."""
    try:
        res = subprocess.run([executable, *argv], capture_output=True, text=True, errors="replace", timeout=timeout,
                             preexec_fn=lambda: limit_memory(limit), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return "hang", None, err
    return classify(res.returncode, res.stderr), res.returncode, res.stderr


# -- forked children ---------------------------------------------------------------------------------------------
def _child(argv: list[str], err_path: str, limit: int) -> None:
    """In a forked child: run the command's click entry point in-process, exit with its status."""
    code = 1
    try:
        fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 2)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 0)
        limit_memory(limit)
        if argv[1] == "kfdtrace.replay.cli":
            from kfdtrace.replay.cli import main
            prog, args = "replay", argv[2:]
        else:
            from kfdtrace.cli import main
            prog, args = "kfdtrace", argv[3:] if argv[2] == "kfdtrace" else argv[2:]
        sys.argv = [prog, *args]
        main.main(args=args, prog_name=prog)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run_campaign(cases: int, jobs: int, seed: int, timeout: float, limit: int, keep: str | None,
                 examples: int = 5, report_every: float = 30.0, first: int = 0) -> dict:
    import kfdtrace.cli  # noqa: F401  (imported once, before forking)
    import kfdtrace.replay.cli  # noqa: F401

    samples = mutate.samples()
    targets = {s: mutate.sample_targets(s) for s in samples}
    work = tempfile.mkdtemp(prefix="kfdfuzz-")
    counts = dict.fromkeys(KINDS, 0)
    found: dict[str, list[str]] = {k: [] for k in KINDS}
    outcome: dict[int, list] = {}  # case -> [commands left, worst kind, details]
    running: dict[int, tuple[int, int, str, float, str]] = {}  # pid -> (case, command index, stderr path, start, argv)
    pending: list[tuple[int, int]] = []
    meta: dict[int, tuple[str, int, str, str]] = {}  # case -> (sample, seed, trace, mutation)
    next_case, done, start, last_report = first, 0, time.monotonic(), time.monotonic()

    def launch(case: int, k: int) -> None:
        sample, case_seed, trace, _ = meta[case]
        argv = commands(trace, targets[sample], recorded=on_recorded(case_seed))[k]
        err = os.path.join(work, f"{case}.{k}.err")
        pid = os.fork()
        if pid == 0:
            _child(argv, err, limit)
        running[pid] = (case, k, err, time.monotonic(), " ".join(argv[1:]))

    def finish(case: int, k: int, status: int | None, err: str, argv: str) -> None:
        nonlocal done
        try:
            with open(err, errors="replace") as f:
                stderr = f.read()
            os.unlink(err)
        except OSError:
            stderr = ""
        kind = classify(status, stderr)
        entry = outcome[case]
        entry[0] -= 1
        if WORST[kind] > WORST[entry[1]]:
            sample, case_seed, trace, what = meta[case]
            entry[1] = kind
            entry[2] = (f"{os.path.basename(sample)}:{case_seed} [{what}] `{argv}` status {status}: "
                        f"{last_line(stderr) or '(no stderr)'}")
        if entry[0] == 0:
            sample, case_seed, trace, _ = meta.pop(case)
            kind, detail = entry[1], entry[2]
            counts[kind] += 1
            if kind != "clean" and len(found[kind]) < examples:
                found[kind].append(detail)
                print(f"  {kind}: {detail}", file=sys.stderr, flush=True)  # now: a stopped run keeps it
            if keep and kind != "clean":
                os.makedirs(keep, exist_ok=True)
                os.replace(trace, os.path.join(keep, f"{os.path.basename(sample)}-{case_seed}.kfdtrace"))
            else:
                os.unlink(trace)
            for left in glob.glob(trace + ".out*"):
                shutil.rmtree(left) if os.path.isdir(left) else os.unlink(left)
            del outcome[case]
            done += 1

    while done < cases:
        while len(running) < jobs and (pending or next_case < first + cases):
            if not pending:
                case = next_case
                next_case += 1
                sample = samples[case % len(samples)]
                case_seed = seed + case // len(samples)
                trace = os.path.join(work, f"{case}.kfdtrace")
                try:
                    what = mutate.make_case(sample, case_seed, trace)
                except Exception as exc:  # a mutation the writer refused: the case is moot
                    what = f"mutator failed: {exc!r}"
                    mutate.Trace(sample).write(trace)
                meta[case] = (sample, case_seed, trace, what)
                n = len(commands(trace, targets[sample]))
                outcome[case] = [n, "clean", ""]
                pending.extend((case, k) for k in range(n))
            launch(*pending.pop(0))
        pid, wstatus = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.monotonic()
            for p, (case, k, err, t0, argv) in list(running.items()):
                if now - t0 > timeout:
                    os.kill(p, signal.SIGKILL)
                    os.waitpid(p, 0)
                    del running[p]
                    finish(case, k, None, err, argv)
            time.sleep(0.002)
        elif pid in running:
            case, k, err, _, argv = running.pop(pid)
            status = os.waitstatus_to_exitcode(wstatus)
            finish(case, k, status, err, argv)
        if time.monotonic() - last_report > report_every:
            last_report = time.monotonic()
            print(f"  {done} cases, {done / (last_report - start):.1f}/s: "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr, flush=True)
    os.rmdir(work) if not os.listdir(work) else None
    return {"cases": done, "seconds": time.monotonic() - start, "counts": counts, "examples": found}


def print_table(result: dict) -> None:
    counts = result["counts"]
    print(f"cases: {result['cases']} in {result['seconds']:.0f} s")
    for kind, label in (("clean", "clean (exit 0-4, no traceback)"), ("traceback", "tracebacks"),
                        ("exit 5", "exit 5 (internal errors)"), ("hang", "hangs"), ("memory", "memory-limit hits"),
                        ("crash", "crashes (signals, other statuses)")):
        print(f"  {label:<36} {counts[kind]}")
    for kind, found in result["examples"].items():
        if found:
            print(f"\n{kind}:")
            for line in found:
                print(f"  {line}")


def repro(spec: str) -> None:
    name, seed = spec.rsplit(":", 1)
    sample = next(s for s in mutate.samples() if os.path.basename(s) in (name, name + ".kfdtrace"))
    out = f"/tmp/fuzz-{os.path.basename(sample).removesuffix('.kfdtrace')}-{seed}.kfdtrace"
    print(mutate.make_case(sample, int(seed), out))
    for argv in commands(out, mutate.sample_targets(sample), recorded=on_recorded(int(seed))):
        print("python " + " ".join(argv))


def main() -> None:
    os.environ.setdefault(ENV_GUARD_PAGES, "1")  # every replayed buffer with an inaccessible page after it
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first", type=int, default=0, help="start at this case (to rerun part of a campaign)")
    parser.add_argument("--timeout", type=float, default=WALL_TIMEOUT, help="wall-clock seconds per command")
    parser.add_argument("--memory", type=int, default=MEMORY_LIMIT, help="address-space limit in bytes")
    parser.add_argument("--keep", help="keep every non-clean case's trace in this directory")
    parser.add_argument("--repro", metavar="SAMPLE:SEED", help="write one case's trace and print its commands")
    args = parser.parse_args()
    if args.repro:
        repro(args.repro)
        return
    print_table(run_campaign(args.cases, args.jobs, args.seed, args.timeout, args.memory, args.keep,
                             first=args.first))


if __name__ == "__main__":
    main()
