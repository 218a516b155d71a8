"""ROCR_VISIBLE_DEVICES and HIP_VISIBLE_DEVICES: the rule (driver/visible.py), System's devices, the trace header."""

from __future__ import annotations

import pytest

from kfdtrace.capture import record
from kfdtrace.driver import System
from kfdtrace.driver.emulator.boards import emulated_topology
from kfdtrace.driver.errors import DeviceError
from kfdtrace.driver.topology import Node
from kfdtrace.driver.visible import VISIBILITY_VARIABLES, gpu_uuid, visible_gpus
from kfdtrace.replay import session
from kfdtrace.replay.engine import EXIT_OK, Options, device_map
from kfdtrace.replay.session import replay_trace
from kfdtrace.traces.format import TraceReader

MACHINE = ["gfx942", "gfx1100", "gfx90a"]
GPUS = emulated_topology(MACHINE).gpus


def targets(nodes: list[Node]) -> list[str]:
    return [{n.gpu_id: t for n, t in zip(GPUS, MACHINE, strict=True)}[n.gpu_id] for n in nodes]


@pytest.fixture(autouse=True)
def no_visibility(monkeypatch):
    """Every test starts with neither variable set, whatever the shell running pytest has."""
    for name in VISIBILITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# -- the rule -------------------------------------------------------------------------------------------------


def test_unset_shows_every_gpu_in_topology_order():
    assert targets(visible_gpus(GPUS, {})) == MACHINE


@pytest.mark.parametrize("name", VISIBILITY_VARIABLES)
@pytest.mark.parametrize("value", ["", "  "])
def test_set_but_empty_hides_every_gpu(name, value):
    assert visible_gpus(GPUS, {name: value}) == []


@pytest.mark.parametrize("name", VISIBILITY_VARIABLES)
def test_indices_select_and_reorder(name):
    assert targets(visible_gpus(GPUS, {name: "2, 0"})) == ["gfx90a", "gfx942"]


def test_uuids_any_case_or_a_unique_prefix():
    uuids = [gpu_uuid(n) for n in GPUS]
    assert all(u and len(u) == 20 and u.startswith("GPU-") for u in uuids)
    assert uuids[2] == f"GPU-{GPUS[2].properties['unique_id']:016x}"
    value = f"{uuids[1].upper()},{uuids[0][:12]}"
    assert targets(visible_gpus(GPUS, {"ROCR_VISIBLE_DEVICES": value})) == ["gfx1100", "gfx942"]
    assert targets(visible_gpus(GPUS, {"HIP_VISIBLE_DEVICES": uuids[2]})) == ["gfx90a"]


def test_hip_indexes_what_rocr_left():
    environ = {"ROCR_VISIBLE_DEVICES": "2,1", "HIP_VISIBLE_DEVICES": "1"}
    assert targets(visible_gpus(GPUS, environ)) == ["gfx1100"]
    environ["HIP_VISIBLE_DEVICES"] = gpu_uuid(GPUS[2])
    assert targets(visible_gpus(GPUS, environ)) == ["gfx90a"]


def test_a_gpu_without_unique_id_has_no_uuid_but_keeps_its_index():
    bare = Node(1, 0x1234, "bare", {"gfx_target_version": 90402})
    assert gpu_uuid(bare) is None
    assert visible_gpus([bare], {"ROCR_VISIBLE_DEVICES": "0"}) == [bare]
    with pytest.raises(DeviceError, match="GPU-XX matches no GPU;"):
        visible_gpus([bare], {"ROCR_VISIBLE_DEVICES": "GPU-XX"})


@pytest.mark.parametrize(("environ", "problem"), [
    ({"HIP_VISIBLE_DEVICES": "3"}, "HIP_VISIBLE_DEVICES=3: index 3 is out of range; there are 3 visible GPUs (0: "),
    ({"ROCR_VISIBLE_DEVICES": "1,2,1"}, "ROCR_VISIBLE_DEVICES=1,2,1: 1 names GPU 1 again; there are 3 GPUs (0: "),
    ({"ROCR_VISIBLE_DEVICES": "0,x"}, "ROCR_VISIBLE_DEVICES=0,x: 'x' is neither a GPU index nor a GPU-<hex> UUID"),
    ({"ROCR_VISIBLE_DEVICES": "0,"}, "ROCR_VISIBLE_DEVICES=0,: '' is neither"),
    ({"ROCR_VISIBLE_DEVICES": "-1"}, "ROCR_VISIBLE_DEVICES=-1: '-1' is neither"),
    ({"ROCR_VISIBLE_DEVICES": "0x1"}, "ROCR_VISIBLE_DEVICES=0x1: '0x1' is neither"),
    ({"HIP_VISIBLE_DEVICES": "GPU-0000"}, "HIP_VISIBLE_DEVICES=GPU-0000: GPU-0000 matches no GPU;"),
    ({"ROCR_VISIBLE_DEVICES": "0", "HIP_VISIBLE_DEVICES": "1"},
     "HIP_VISIBLE_DEVICES=1: index 1 is out of range; there is 1 visible GPU (0: gfx942 gpu_id"),
    ({"ROCR_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": "0"}, "HIP_VISIBLE_DEVICES=0: index 0 is out of range; "
                                                               "there is no visible GPU"),
])  # fmt: skip
def test_bad_values_are_one_line_errors_naming_variable_value_and_gpus(environ, problem):
    with pytest.raises(DeviceError) as caught:
        visible_gpus(GPUS, environ)
    message = str(caught.value)
    assert message.startswith(problem) and "\n" not in message


def test_a_prefix_naming_several_gpus_is_an_error():
    twins = [Node(i, 0x100 + i, "twin", {"gfx_target_version": 110000, "unique_id": 0xABCD_0000 + i})
             for i in (1, 2)]
    with pytest.raises(DeviceError, match=r"GPU-00000000abcd matches 2 GPUs; there are 2 GPUs \(0: gfx1100"):
        visible_gpus(twins, {"ROCR_VISIBLE_DEVICES": "GPU-00000000abcd"})
    assert visible_gpus(twins, {"ROCR_VISIBLE_DEVICES": "GPU-00000000ABCD0002"}) == [twins[1]]


# -- System, capture and replay -------------------------------------------------------------------------------


def test_system_opens_the_visible_gpus_in_order_and_copies_on_one(monkeypatch):
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "2,1")
    with System.open(emulate=",".join(MACHINE)) as system:
        assert [d.target.name for d in system.devices] == ["gfx90a", "gfx1100"]
        assert [d.node.gpu_id for d in system.devices] == [GPUS[2].gpu_id, GPUS[1].gpu_id]
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1")
    with System.open(emulate=",".join(MACHINE)) as system:
        (gpu,) = system.devices
        assert (gpu.index, gpu.target.name, gpu.target.family.name) == (0, "gfx1100", "RDNA3")
        src, dst, done = gpu.alloc(4096, "gtt"), gpu.alloc(4096, "vram"), system.semaphore()
        src.write(bytes(range(256)) * 16)
        gpu.sdma_queue().copy(dst, src, 4096).signal(done, 1).submit()
        done.wait(1)
        assert dst.read() == bytes(range(256)) * 16


def test_system_says_which_variable_hid_every_gpu(monkeypatch):
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "")
    with pytest.raises(DeviceError, match=r"lists 3 GPU node\(s\) but HIP_VISIBLE_DEVICES='' hides them all"):
        System.open(emulate=",".join(MACHINE))


def test_capture_header_lists_only_the_visible_gpu_and_the_trace_replays(tmp_path, monkeypatch):
    path = str(tmp_path / "one.kfdtrace")
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1")
    with record(path), System.open(emulate="gfx942,gfx1100") as system:
        gpu = system.devices[0]
        gpu_id, buf = gpu.gpu_id, gpu.alloc(4096, "gtt", name="out")
        gpu.sdma_queue().fill(buf, 7, 4096).sync()
    with TraceReader(path) as trace:
        gpus, topology = trace.header["gpus"], trace.header["topology"]
    assert [(g["target"], g["gpu_id"]) for g in gpus] == [("gfx1100", gpu_id)]
    assert sum(1 for n in topology["nodes"] if n["gpu_id"]) == 2  # the machine itself is kept whole
    monkeypatch.delenv("HIP_VISIBLE_DEVICES")
    report = replay_trace(path, Options(), emulate="gfx1201")
    assert report.status == EXIT_OK, report.lines()
    assert report.results[0].verified > 0
    recorded = replay_trace(path, Options(), emulate_recorded=True)  # the GPU the program saw, not the machine
    assert recorded.status == EXIT_OK and recorded.target_gfx == ["gfx1100"], recorded.lines()


def test_devices_command_marks_hidden_gpus_and_rejects_a_bad_value():
    from click.testing import CliRunner

    from kfdtrace.cli import main

    args = ["devices", "--emulate", ",".join(MACHINE)]
    out = CliRunner().invoke(main, args, env={"ROCR_VISIBLE_DEVICES": "2,0", "HIP_VISIBLE_DEVICES": "1"})
    assert out.exit_code == 0, out.output
    rows = [line.split() for line in out.output.splitlines()]
    assert rows[0][4] == "device" and [(r[2], r[4]) for r in rows[1:]] == [
        ("gfx942", "0"), ("gfx1100", "hidden"), ("gfx90a", "hidden")]
    out = CliRunner().invoke(main, args, env={"HIP_VISIBLE_DEVICES": "7"})
    assert out.exit_code == 1 and "HIP_VISIBLE_DEVICES=7: index 7 is out of range" in out.output


def test_the_recorded_topology_runs_each_recorded_gpu_on_its_own_node(tmp_path, monkeypatch):
    """Campaign 95: ROCR_VISIBLE_DEVICES had reordered the GPUs, and --emulate-recorded, whose target lists them
    in node order, put recorded GPU 0's work on the first node (a kernel built for it then had no code object)."""
    path = str(tmp_path / "reordered.kfdtrace")
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "2,1")
    with record(path), System.open(emulate=",".join(MACHINE)) as system:
        recorded = [(gpu.gpu_id, gpu.target.name) for gpu in system.devices]
        for gpu in system.devices:
            gpu.sdma_queue().fill(gpu.alloc(4096, "gtt", name=f"out{gpu.index}"), gpu.index + 1, 4096).sync()
    monkeypatch.delenv("ROCR_VISIBLE_DEVICES")
    mapped = []

    def spy(*args, **kwargs):
        mapped.append(devices := device_map(*args, **kwargs))
        return devices
    monkeypatch.setattr(session, "device_map", spy)
    report = replay_trace(path, Options(), emulate_recorded=True)
    assert report.status == EXIT_OK, report.lines()
    assert recorded == [(GPUS[2].gpu_id, "gfx90a"), (GPUS[1].gpu_id, "gfx1100")]
    assert [(gpu_id, mapped[0][gpu_id].gpu_id, mapped[0][gpu_id].target.name) for gpu_id, _ in recorded] == \
        [(gpu_id, gpu_id, name) for gpu_id, name in recorded]
