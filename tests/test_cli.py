"""The command line: one row per GPU, selftest, and one-line errors with a non-zero exit (never a traceback)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from kfdtrace.driver.emulator.boards import emulated_topology
from kfdtrace.driver.topology import dump_to_directory

from .test_replay import sample


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfdtrace", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def test_devices_emulated_mixed():
    out = run("devices", "--emulate", "gfx942,gfx1100,gfx1201")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["node", "gpu_id", "target", "family"]
    assert [line.split()[2:4] for line in lines[1:]] == [["gfx942", "CDNA3"], ["gfx1100", "RDNA3"],
                                                         ["gfx1201", "RDNA4"]]
    assert "2 (14)" in lines[1] and lines[1].rstrip().endswith("emulated")


def test_devices_from_a_copied_sysfs_tree(tmp_path):
    dump_to_directory(emulated_topology(["gfx90a", "gfx1030"]), tmp_path)
    tree = tmp_path / "sys/devices/virtual/kfd/kfd/topology"
    out = run("devices", "--sysfs", str(tree))
    assert out.returncode == 0, out.stderr
    assert [line.split()[2] for line in out.stdout.splitlines()[1:]] == ["gfx90a", "gfx1030"]
    assert f"sysfs:{tree}" in out.stdout


def test_emulate_from_emulates_exactly_that_tree(tmp_path):
    topology = emulated_topology(["gfx1100", "gfx1100"])
    dump_to_directory(topology, tmp_path)
    out = run("devices", "--emulate-from", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = out.stdout.splitlines()[1:]
    assert [r.split()[1] for r in rows] == [f"{n.gpu_id:#06x}" for n in topology.gpus]
    assert all(r.rstrip().endswith("emulated") for r in rows)


def test_environment_selects_emulation():
    import os

    out = run("devices", env={**os.environ, "KFDTRACE_EMULATE": "gfx1030"})
    assert out.returncode == 0 and out.stdout.splitlines()[1].split()[2] == "gfx1030"


def test_selftest_cli_passes_on_gfx942():
    out = run("selftest", "--emulate", "gfx942")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout and "FAIL" not in out.stdout


def _one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_unknown_target_is_one_line():
    _one_line_error(run("devices", "--emulate", "gfx942,gfx9999"), "gfx9999", "gfx1100")


def test_unusable_sysfs_dir_is_one_line(tmp_path):
    _one_line_error(run("devices", "--sysfs", str(tmp_path)), "no KFD topology")


def test_unsupported_target_in_a_copied_tree_is_one_line(tmp_path):
    topology = emulated_topology(["gfx1100"])
    topology.gpus[0].properties["gfx_target_version"] = 80002  # a Tonga: not a supported family
    dump_to_directory(topology, tmp_path)
    _one_line_error(run("selftest", "--emulate-from", str(tmp_path)), "80002")


def _on_a_terminal(*args: str) -> str:
    """Run a command with its stderr on a pseudo-terminal; what it wrote there."""
    import os
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=120)
    os.close(master)
    return out.decode(errors="replace")


def test_progress_is_shown_on_a_terminal(tmp_path):
    import os

    out = str(tmp_path / "p.kfdtrace")
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "sdma_stress.py")
    shown = _on_a_terminal(sys.executable, "-m", "kfdtrace.capture.cli", "run", "--emulate", "gfx942", "-o", out,
                           example, "--rounds", "6000", "--size", "4096")
    assert "\rcapture: " in shown and "submissions" in shown
    shown = _on_a_terminal(sys.executable, "-m", "kfdtrace.replay.cli", out, "--emulate", "gfx1100", "--loop", "2")
    assert "\rreplay: loop 2/2" in shown


# -- replay's exit statuses -------------------------------------------------------------------------------


def _replay_in_process(*args: str):
    from click.testing import CliRunner

    from kfdtrace.replay.cli import main

    return CliRunner().invoke(main, list(args))


def _ping_pong() -> str:
    import os

    return os.path.join(os.path.dirname(__file__), "..", "traces", "samples", "ping_pong-gfx1100.kfdtrace")


def test_replay_internal_error_is_exit_5_never_diverged(monkeypatch):
    from kfdtrace.replay.engine import Instance

    ran = Instance.run

    def broken(self):
        if self.move_all:  # the second instance only: its thread's exception reaches the command
            raise RuntimeError("dictionary changed size during iteration")
        return ran(self)

    monkeypatch.setattr(Instance, "run", broken)
    res = _replay_in_process(_ping_pong(), "--emulate", "gfx1100", "--concurrent", "2")
    assert res.exit_code == 5, res.output
    assert res.stderr.splitlines() == ["replay: internal error: RuntimeError: dictionary changed size during "
                                       "iteration (please report; --debug shows the traceback)"]
    assert "DIVERGED" not in res.stdout and "OK" not in res.stdout
    res = _replay_in_process(_ping_pong(), "--emulate", "gfx1100", "--concurrent", "2", "--debug")
    assert res.exit_code == 5
    assert "Traceback (most recent call last)" in res.stderr and "in broken" in res.stderr
    assert res.stderr.splitlines()[-1].startswith("replay: internal error: RuntimeError")


def test_replay_help_documents_every_exit_status():
    res = _replay_in_process("--help")
    assert res.exit_code == 0
    text = " ".join(res.stdout.split())
    for status in ("0 ok", "1 diverged", "2 hang", "3 cannot replay", "4 bad input", "5 internal error"):
        assert status in text, status
    assert "--debug" in text


# -- bad command lines (issue 8 item 7) --------------------------------------------------------------------


def test_more_gpus_than_kfd_opens_are_refused_at_once():
    import time

    import pytest

    from kfdtrace.driver.emulator.boards import MAX_GPUS, parse_emulate_spec

    assert MAX_GPUS == 64  # MAX_GPU_INSTANCE in the kernel's amdkfd kfd_priv.h
    assert len(emulated_topology(parse_emulate_spec("64xgfx1100")).gpus) == 64
    start = time.monotonic()
    for spec in ("65xgfx942", "256xgfx942", "99999999999xgfx942", ",".join(["gfx942"] * 300)):
        with pytest.raises(ValueError, match="at most 64 GPUs"):
            parse_emulate_spec(spec)
    with pytest.raises(ValueError, match="at most 64 GPUs"):
        emulated_topology(["gfx942"] * 256)
    assert time.monotonic() - start < 1
    _one_line_error(run("devices", "--emulate", "256xgfx942"), "'256xgfx942'", "64 GPUs", "MAX_GPU_INSTANCE")


def _replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", *args], capture_output=True, text=True,
                          timeout=60)


def test_replay_timeout_must_be_finite_and_positive():
    for value in ("nan", "inf", "-1", "0", "-inf"):
        out = _replay(_ping_pong(), "--emulate", "gfx1100", "--timeout", value)
        assert out.returncode == 4, (value, out.stderr)
        _one_line_error(out, "replay: error: --timeout", "finite", "greater than 0")
    res = _replay_in_process(_ping_pong(), "--emulate", "gfx1100", "--timeout", "0.5")
    assert res.exit_code == 0, res.output


BAD_SPECS = [  # (spec, the item the message names, a hint it gives)
    ("", "''", "the list is empty"),
    ("GFX942", "'GFX942'", "names are lower case: 'gfx942'"),
    ("2xGFX942", "'2xGFX942'", "names are lower case: '2xgfx942'"),
    (" gfx942", "' gfx942'", "no spaces around names: 'gfx942'"),
    ("gfx942, gfx1100", "' gfx1100'", "no spaces"),
    ("gfx942,,gfx1100", "''", "an empty item in 'gfx942,,gfx1100'"),
    ("gfx942,", "''", "an empty item"),
    ("gfx9999", "'gfx9999'", "gfx1201 (120001)"),
    ("0xgfx942", "'0xgfx942'", "gfx1201 (120001)"),
]


def test_emulate_spec_accepts_exactly_the_documented_names():
    import pytest

    from kfdtrace.driver.emulator.boards import parse_emulate_spec
    from kfdtrace.driver.families import TARGETS

    assert parse_emulate_spec(",".join(t.name for t in TARGETS)) == [t.name for t in TARGETS]
    assert parse_emulate_spec("2xgfx942,mi210") == ["gfx942", "gfx942", "mi210"]
    for spec, item, hint in BAD_SPECS:
        with pytest.raises(ValueError) as info:
            parse_emulate_spec(spec)
        message = str(info.value)
        assert f"unsupported GPU target {item};" in message and hint in message, message
        assert "gfx942 (90402)" in message and "\n" not in message


def test_bad_emulate_specs_are_one_line_in_every_command(tmp_path):
    import os

    for spec, item, hint in BAD_SPECS:
        _one_line_error(run("devices", "--emulate", spec), "kfdtrace: error:", item, hint)
    _one_line_error(run("selftest", "--emulate", "GFX942"), "lower case")
    out = _replay(_ping_pong(), "--emulate", "")
    assert out.returncode == 4
    _one_line_error(out, "replay: error:", "the list is empty")
    _one_line_error(run("devices", env={**os.environ, "KFDTRACE_EMULATE": "gfx942,,gfx1100"}),
                    "KFDTRACE_EMULATE:", "an empty item")


def _marker_workload(tmp_path) -> tuple[str, str]:
    """A workload script that leaves a marker file when it runs; (script, marker)."""
    marker = tmp_path / "ran"
    script = tmp_path / "workload.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    return str(script), str(marker)


def _capture(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfdtrace.capture.cli", "run", *args], capture_output=True,
                          text=True, timeout=120)


def test_capture_refuses_bad_command_lines_before_running_the_workload(tmp_path):
    import os

    script, marker = _marker_workload(tmp_path)
    good = str(tmp_path / "out.kfdtrace")
    cases = [
        (["-o", str(tmp_path / "missing" / "t.kfdtrace")], "No such file or directory"),
        (["-o", str(tmp_path)], "Is a directory"),
        (["-o", good, "--chunk-size", "1000"], "--chunk-size 1000: give a power of two from 4096 to 33554432"),
        (["-o", good, "--chunk-size", str(128 << 20)], f"--chunk-size {128 << 20}: give a power of two"),  # c108
        (["-o", good, "--chunk-size", "-1"], "--chunk-size -1"),
        (["-o", good, "--chunk-size", "0"], "--chunk-size 0"),
        (["-o", good, "--emulate", "gfx9999"], "'gfx9999'"),
        (["-o", good, "--emulate", ""], "the list is empty"),
        (["-o", good, "--emulate", "256xgfx942"], "at most 64 GPUs"),
    ]
    if os.path.exists("/dev/full"):
        cases.append((["-o", "/dev/full"], "/dev/full: cannot write the trace there: No space left on device"))
    for args, needle in cases:
        out = _capture(*args, script)
        assert out.returncode == 2, (args, out.stderr)
        _one_line_error(out, "capture: error: ", needle)
        assert not os.path.exists(marker), args
        assert not os.path.exists(good), args
    out = _capture("-o", good, "--emulate", "gfx1100", script)
    assert out.returncode == 0, out.stderr
    assert os.path.exists(marker) and os.path.getsize(good) > 0


@pytest.mark.parametrize("threads", [0, 2])
def test_capture_that_cannot_write_its_trace_stops_the_workload_with_one_line(threads, tmp_path):
    """A file-size limit stands in for a full disk: the write fails mid-workload (EFBIG instead of ENOSPC).
    The workload's buffers stay under the limit (the emulator's memfds are files too). Threads stopped so say
    nothing of it (campaign 88: a traceback each): capture says why, once."""
    import os
    import resource
    import signal

    from kfdtrace.traces.format import TraceReader

    path, limit = str(tmp_path / "t.kfdtrace"), 3 << 20
    workload = tmp_path / "w.py"
    workload.write_text(
        "import os, threading\n"
        "from kfdtrace.driver import System\n"
        "with System.open() as system:\n"
        "    gpu = system.devices[0]\n"
        "    def work():\n"
        "        src, dst, q = gpu.alloc(1 << 20, 'gtt'), gpu.alloc(1 << 20, 'gtt'), gpu.sdma_queue()\n"
        "        for i in range(20):  # 20 MiB of incompressible CPU writes to record\n"
        "            src.write(os.urandom(1 << 20))\n"
        "            q.copy(dst, src, 1 << 20).sync()\n"
        f"    workers = [threading.Thread(target=work) for _ in range({threads})]\n"
        "    for w in workers: w.start()\n"
        "    for w in workers: w.join()\n"
        "    if not workers: work()\n"
        "print('finished')  # not once the recording failed: the System's close is stopped too\n")

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = subprocess.run([sys.executable, "-m", "kfdtrace.capture.cli", "run", "-o", path, "--emulate", "gfx942",
                          str(workload)], capture_output=True, text=True, timeout=120, preexec_fn=small_files)
    assert "finished" not in out.stdout
    _one_line_error(out, "capture: error: ", "File too large: the workload was stopped there")
    assert out.returncode == 1
    with TraceReader(path) as r:  # what was written before reads back
        assert r.recovered and r.record_count > 0 and os.path.getsize(path) <= limit
        assert sum(1 for _ in r.records()) == r.record_count


def test_sdma_work_and_replay_start_without_numpy_or_the_isa_interpreter():
    """What SDMA work needs (the driver, the emulated GPU, replay) loads neither numpy nor the shader
    interpreter: those come with the first buffer view, compute queue or dispatch."""
    script = (
        "import sys\n"
        "import kfdtrace.replay.session, kfdtrace.replay.cli\n"
        "from kfdtrace.driver import System\n"
        "with System.open(emulate='gfx942') as s:\n"
        "    d = s.devices[0]\n"
        "    a, b = d.alloc(4096, 'gtt'), d.alloc(4096, 'gtt')\n"
        "    a.write(b'x' * 4096)\n"
        "    d.sdma_queue().copy(b, a, 4096).sync()\n"
        "    assert b.read() == b'x' * 4096\n"
        "    loaded = sorted(m for m in sys.modules if m == 'numpy' or '.shader' in m or m.endswith('kernargs'))\n"
        "    assert not loaded, loaded\n"
        "    d.compute_queue()\n"
        "    assert 'numpy' in sys.modules and 'kfdtrace.driver.emulator.shader.interpreter' in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_replaying_an_sdma_trace_loads_no_code_object_reader_nor_bundle_machinery():
    """`replay` of a trace without kernels starts without pyelftools (the code-object reader: a tenth of a
    second here) or tarfile and the dump machinery (bundles): a replay of a small trace was mostly start-up."""
    script = (
        "import runpy, sys\n"
        f"sys.argv = ['replay', {sample('sdma_stress-gfx942')!r}, '--emulate-recorded']\n"
        "try:\n"
        "    runpy.run_module('kfdtrace.replay.cli', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('elftools', 'tarfile', 'numpy')\n"
        "               or m in ('kfdtrace.driver.code_object', 'kfdtrace.traces.dump'))\n"
        "assert not heavy, heavy\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("link", ["symlink", "hardlink", "same"])
@pytest.mark.parametrize("command", [["trim", "-s", "0..1"], ["redact"], ["bundle"], ["export", "--perfetto"],
                                     ["minimize", "--until", "true {trace}"]])
def test_a_tool_never_writes_over_the_trace_it_reads(command, link, tmp_path):
    """An output that names the input (itself, or through a symbolic or hard link) is refused before anything is
    written: the trace being read is left whole."""
    from click.testing import CliRunner

    from kfdtrace.cli import main

    trace = tmp_path / "t.kfdtrace"
    shutil.copy(sample("sdma_stress-gfx942"), trace)
    before = trace.read_bytes()
    out = tmp_path / "out"
    if link == "symlink":
        out.symlink_to(trace)
    elif link == "hardlink":
        os.link(trace, out)
    else:
        out = trace
    flag = [] if command[-1] == "--perfetto" else ["-o"]
    result = CliRunner().invoke(main, [command[0], str(trace), *command[1:], *flag, str(out)])
    assert result.exit_code != 0 and "must go to another file than" in result.output, result.output
    assert trace.read_bytes() == before


@pytest.mark.parametrize("command", [["redact"], ["trim", "--submits", "0..2"],
                                     ["minimize", "--until", "false {trace}"], ["bundle"]],
                         ids=["redact", "trim", "minimize", "bundle"])
def test_a_trace_tool_never_writes_to_nor_removes_what_is_not_a_regular_file(tmp_path, command):
    """`redact -o /dev/null` cut the device short, failed, and unlinked it: the machine lost /dev/null (campaign
    39). An output that exists and is no regular file (here a FIFO) is refused before anything is written."""
    from click.testing import CliRunner

    from kfdtrace.cli import main

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = CliRunner().invoke(main, [command[0], sample("sdma_stress-gfx942"), *command[1:], "-o", str(fifo)])
    assert result.exit_code != 0 and f"{fifo} is not a regular file" in result.output, result.output
    assert fifo.is_fifo()


def test_replay_never_writes_its_timeline_over_the_trace(tmp_path):
    """Campaign 68: `replay T --timeline T` wrote the timeline's JSON over the trace it replayed."""
    trace = tmp_path / "t.kfdtrace"
    shutil.copy(sample("sdma_stress-gfx942"), trace)
    before = trace.read_bytes()
    out = _replay(str(trace), "--emulate", "gfx942", "--timeline", str(trace))
    assert out.returncode == 4
    _one_line_error(out, "replay: error: the timeline must go to another file than")
    assert trace.read_bytes() == before


def test_capture_never_writes_over_its_workload_and_refuses_a_missing_module(tmp_path):
    """Campaign 68: `capture run -o job.py job.py` replaced the script with the trace; `-m missing` printed a
    traceback and wrote an empty trace."""
    script, marker = _marker_workload(tmp_path)
    source = open(script).read()
    out = _capture("-o", script, script)
    assert out.returncode == 2 and not os.path.exists(marker) and open(script).read() == source
    _one_line_error(out, "capture: error: the trace must go to another file than")
    trace = tmp_path / "m.kfdtrace"
    for module in ("no_such_module_kfdtrace", ".relative", ""):
        out = _capture("-o", str(trace), "-m", module)
        assert out.returncode == 2, (module, out.stderr)
        _one_line_error(out, "capture: error:", "no such module (-m)")
        assert not trace.exists()


def test_replay_checks_what_concurrent_instances_need_before_opening_them():
    """Campaign 68: `--concurrent 20000` opened a trace reader per instance (740 MB, then "Too many open files",
    exit 4) before saying the target cannot hold that many."""
    out = _replay(sample("sdma_stress-gfx942"), "--emulate", "gfx942", "--concurrent", "100000")
    assert out.returncode == 3
    _one_line_error(out, "replay: cannot replay here:", "x100000 instances")


@pytest.mark.parametrize("path", ["/dev/zero", "fifo"])
def test_disasm_reads_only_a_regular_file(path, tmp_path):
    """Campaign 68: `disasm /dev/zero` grew without bound and `disasm FIFO` blocked for ever."""
    if path == "fifo":
        path = str(tmp_path / "fifo.co")
        os.mkfifo(path)
    _one_line_error(run("disasm", path), f"kfdtrace: error: {path}: cannot read it: not a regular file")


@pytest.mark.parametrize("value", ["inf", "nan"])
@pytest.mark.parametrize("command", [["minimize", "--until", "false {trace}", "-o", "OUT"], ["bundle", "-o", "OUT"]])
def test_timeouts_of_the_trace_tools_are_finite(command, value, tmp_path):
    """Campaign 68: `minimize --timeout inf` ended in a traceback, and `bundle --timeout nan` wrote a bundle
    whose report said INTERNAL ERROR for a trace that hangs."""
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    out = run(args[0], sample("sdma_stress-gfx942"), *args[1:], "--timeout", value)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"Invalid value for '--timeout': '{value}' is not a finite number of seconds" in out.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_report_that_cannot_be_written_leaves_the_verdict_as_the_exit_status():
    """Campaign 68: `replay ... > /dev/full` ended in a traceback and exit 1, which reads as DIVERGED."""
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", sample("sdma_stress-gfx942"), "--emulate",
                              "gfx942", "--json"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert out.returncode == 0
    assert out.stderr.splitlines() == ["replay: the report was not written: No space left on device; the exit status "
                                       "is its verdict (0)"]


@pytest.mark.parametrize("how, status, line", [
    ("raise KeyboardInterrupt", 130, "replay: interrupted before the replay ended: no verdict"),
    ("import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(5)", 143,
     "replay: terminated before the replay ended: no verdict"),
    # campaign 102: one raised in a class's __set_name__ comes wrapped in a RuntimeError
    ("class F:\n    def __set_name__(self, owner, name):\n        raise KeyboardInterrupt\n"
     "class C:\n    f = F()", 130, "replay: interrupted before the replay ended: no verdict"),
    # campaign 102: loaded, before the command's own handling: click's standalone ending said "Aborted!", 1
    ("import click\n@click.command(context_settings={'ignore_unknown_options': True})\n"
     "@click.argument('args', nargs=-1)\ndef command(args):\n    raise KeyboardInterrupt\n"
     "def entry(standalone_mode):\n    return command(standalone_mode=standalone_mode)", 130,
     "replay: interrupted before the replay ended: no verdict")])
def test_a_signal_while_a_command_loads_ends_it_in_one_line(tmp_path, monkeypatch, capsys, how, status, line):
    """Campaign 99: Ctrl-C or SIGTERM in replay's first tenths of a second (its modules loading, before its own
    handlers) ended it with a traceback, or silently, and no --json object. The console scripts load each command
    with both handled (kfdtrace/entry.py)."""
    import json
    import signal

    from kfdtrace import entry

    defined = how if "def entry" in how else how + "\ndef entry(standalone_mode):\n    pass\n"
    (tmp_path / "loading.py").write_text(defined)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["replay", "t.kfdtrace", "--json"])
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as done:
            entry._run("loading:entry", entry._replay_stopped, keep_sigterm=True)
    finally:
        signal.signal(signal.SIGTERM, before)
    out, err = capsys.readouterr()
    assert done.value.code == status and err.strip() == line  # (click ends a ^C's echo with a blank line first)
    assert json.loads(out) == {"status": status, "error": line}


def test_the_console_scripts_are_the_entry_modules():
    """What pyproject.toml installs: each script loads its command through kfdtrace.entry; `kfdtrace` keeps
    SIGTERM raising throughout, as `replay` does (its commands end in one line)."""
    import inspect
    import tomllib

    from kfdtrace import entry

    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {name: f"kfdtrace.entry:{name}" for name in ("kfdtrace", "capture", "replay")}
    assert "keep_sigterm=True" in inspect.getsource(entry.kfdtrace)


def test_a_sigterm_while_a_kfdtrace_tool_runs_ends_it_in_one_line(tmp_path, monkeypatch, capsys):
    """Campaign 102: the README says the tools exit 143 with one line when terminated; a SIGTERM after loading
    killed them silently (`dump`, `info`, `trim`: only `minimize` took it over)."""
    import signal

    from kfdtrace import entry

    (tmp_path / "running.py").write_text(
        "import os, signal, time\ndef main(standalone_mode):\n    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as done:
            entry._run("running:main", entry._said("kfdtrace"), keep_sigterm=True)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert done.value.code == 143 and capsys.readouterr().err == "kfdtrace: terminated\n"


@pytest.mark.parametrize("bad", [["--device", "x"], ["--loop", "x"], ["--bogus"]])
def test_replay_usage_errors_under_json_print_the_json_error_too(bad):
    """Campaign 109: click's own usage errors (a value of the wrong type, an unknown option) exited 4 with nothing
    on stdout under --json, where the options replay checks itself give the JSON error object."""
    import json

    done = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", sample("sdma_stress-gfx942"), "--json", *bad],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == 4 and report["error"].startswith("replay: error: "), report
