"""The command line: one row per GPU, selftest, and one-line errors with a non-zero exit (never a traceback)."""

from __future__ import annotations

import subprocess
import sys

from kfdtrace.driver.emulator.boards import emulated_topology
from kfdtrace.driver.topology import dump_to_directory


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
