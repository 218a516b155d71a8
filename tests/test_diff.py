"""`kfdtrace diff` (issue 12): the first structural difference between two traces, addresses, handles and
times normalised away; then how many records, packets, buffers, chunks and checkpoints differ."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from kfdtrace.capture import record
from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.driver import System
from kfdtrace.traces import diff as D
from kfdtrace.traces import records as R
from kfdtrace.traces.format import TraceReader, TraceWriter
from kfdtrace.traces.walk import TraceState, ioctl_entry

SAMPLES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "traces", "samples", "*.kfdtrace")))


def copies(path: str, *, rounds: int = 3, size: int = 4096, changed: tuple[int, int] | None = None,
           extra_buffer: bool = False, seed: int = 1) -> str:
    """Record a small workload: each round copies `src` to `dst` and signals, and the CPU waits (so a
    checkpoint hashes `dst`). `changed` (round, size): that round copies another size; `extra_buffer`: an
    unnamed, unused buffer first, which moves every buffer after it; `seed`: the data the CPU writes."""
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        if extra_buffer:
            gpu.alloc(1 << 16, "gtt")
        q = gpu.sdma_queue(name="q")
        src, dst = gpu.alloc(size, "gtt", name="src"), gpu.alloc(size, "gtt", name="dst")
        done = system.semaphore("done")
        src.write(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8))
        for r in range(1, rounds + 1):
            n = changed[1] if changed and changed[0] == r else size
            q.copy(dst, src, n).signal(done, r).submit()
            done.wait(r)
        done.free()
    return path


def diff(a: str, b: str) -> D.DiffResult:
    with TraceReader(a) as ra, TraceReader(b) as rb:
        return D.diff_traces(ra, rb)


def run(*args: str):
    return CliRunner().invoke(kfdtrace_cli, ["diff", *args], prog_name="kfdtrace")


def first_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("first difference: "))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    return copies(str(tmp_path_factory.mktemp("diff") / "base.kfdtrace"))


def test_a_trace_against_itself_is_the_same(base):
    res = run(base, base)
    assert res.exit_code == 0, res.output
    assert "no difference" in res.output.splitlines()
    result = diff(base, base)
    assert not result.differs and result.tallies["packet"].compared > 0
    assert all(t.differ == 0 and t.only == [0, 0] for t in result.tallies.values())


def test_the_same_workload_recorded_twice_is_the_same(base, tmp_path):
    """Times, fds, handles and (mostly: the emulator's buffers are host mmaps) VAs differ; buffers left to
    System.close are freed in set order. test_every_address_moved_is_no_difference moves every VA for sure."""
    again = copies(str(tmp_path / "again.kfdtrace"))
    result = diff(base, again)
    assert not result.differs, result.lines()
    assert result.tallies["submission"].compared == 3 and result.tallies["checkpoint"].compared >= 1
    assert result.tallies["buffer"].compared == 6 and result.tallies["mem"].compared == 1


def shifted(src: str, out: str, shift: int) -> str:
    """A copy of trace `src` with every GPU virtual address moved by `shift`: buffers, CPU writes, checkpoints,
    signals, queue pointers, the addresses the packets hold and ioctl arguments that point into a buffer."""
    with TraceReader(src) as r:
        w, state = TraceWriter(out, r.header), TraceState(r.header)

        def move(addr: int) -> int:
            return addr + shift if addr and state.by_va.find(addr) else addr

        def moved_args(request: int | None, data: bytes | None) -> bytes | None:
            entry = ioctl_entry(request) if request is not None else None
            if data is None or entry is None or entry.struct is None:
                return data
            args = entry.struct.from_buffer_copy(data)
            for name, *_ in args._fields_:
                if isinstance(getattr(args, name), int):
                    setattr(args, name, move(getattr(args, name)))
            return bytes(args)

        for rec in R.checked(r.records()):
            f = dict(rec.fields)
            for k in ("va", "addr", "ring", "rptr", "wptr"):
                if type(f.get(k)) is int:
                    f[k] = f[k] + shift if rec.type == R.ALLOC else move(f[k])
            if rec.type in (R.IOCTL, R.IOCTL_END):
                request = f["request"] if rec.type == R.IOCTL else state.ioctls.get(f["seq"], (None,))[0]
                f["data"] = moved_args(request, f["data"])
            elif rec.type == R.CHECKPOINT:
                f["wait"] = {**f["wait"], "addr": move(f["wait"]["addr"])}
                f["buffers"] = [{**b, "va": move(b["va"])} for b in f["buffers"]]
            for key in [f["key"]] if rec.type == R.MEM else [k for b in f.get("buffers") or () for k in b["keys"]]:
                w.blob(r.blob(key), key)
            sub = state.apply(rec)  # the record as recorded: the buffer map stays the original's
            if sub is not None:
                assert sub.error is None
                f["ring"] = b"".join(p.relocate(move).encode() for p in sub.packets)
            w.record(rec.type, **f)
        w.close()
    return out


def test_every_address_moved_is_no_difference(base, tmp_path):
    """Deterministically: the same trace with every address 64 GiB lower compares the same, though no alloc,
    CPU write or packet address is the same number."""
    moved = shifted(base, str(tmp_path / "moved.kfdtrace"), -(1 << 36))
    with TraceReader(base) as ra, TraceReader(moved) as rb:
        va = [(r.fields["va"], r.fields["size"]) for r in ra.records(["alloc", "mem"])]
        vb = [(r.fields["va"], r.fields["size"]) for r in rb.records(["alloc", "mem"])]
        rings = [(x.fields["ring"], y.fields["ring"]) for x, y in zip(ra.records(["doorbell"]),
                                                                     rb.records(["doorbell"]), strict=True)]
    assert len(va) == len(vb) == 7 and all(x[0] - y[0] == 1 << 36 and x[1] == y[1] for x, y in zip(va, vb, strict=True))
    assert all(x != y for x, y in rings)
    result = diff(base, moved)
    assert not result.differs, result.lines()
    # a checkpoint a round: the second and third copies leave dst as the first did, and are verified all the same
    assert result.tallies["packet"].compared == 21 and result.tallies["checkpoint"].compared == 3  # 7 a round


def test_buffers_moved_by_an_extra_buffer_leave_packets_the_same(base, tmp_path):
    """Every VA moves, and B has one more buffer (and its ioctls): found as an insertion, not as every later
    buffer and ioctl differing."""
    moved = copies(str(tmp_path / "moved.kfdtrace"), extra_buffer=True)
    result = diff(base, moved)
    assert result.differs
    t = result.tallies
    assert (t["packet"].differ, t["packet"].only, t["submission"].differ) == (0, [0, 0], 0)
    assert (t["mem"].differ, t["checkpoint"].differ) == (0, 0)
    assert t["buffer"].differ == 0 and t["buffer"].only == [0, 1]
    assert t["ioctl"].differ == 0 and t["ioctl"].only[0] == 0 and t["ioctl"].only[1] >= 2  # ALLOC, MAP, ...
    assert result.first.text.startswith("B has ") and "ALLOC_MEMORY_OF_GPU" in result.first.text
    assert any("alloc A " in line and " B " in line for line in result.lines())


def test_a_changed_copy_size_names_the_submission_packet_and_field(base, tmp_path):
    changed = copies(str(tmp_path / "changed.kfdtrace"), changed=(1, 2048))
    res = run(base, changed)
    assert res.exit_code == 1, res.output
    line = first_line(res.output)
    assert "submission 0 (queue 0 q), packet " in line and " COPY_LINEAR field count: A 4095, B 2047" in line
    result = diff(base, changed)
    assert result.first.kind == "submission" and (result.first.a, result.first.b) == (4095, 2047)
    assert result.tallies["submission"].differ == 1 and result.tallies["packet"].differ == 1
    assert result.tallies["checkpoint"].differ == 1  # dst holds half the bytes after the first round


def test_different_cpu_data_is_a_mem_chunk_difference(base, tmp_path):
    other = copies(str(tmp_path / "other.kfdtrace"), seed=2)
    result = diff(base, other)
    first = result.first
    assert first.kind == "mem" and first.field == "key" and first.what == "mem 0 (src+0x0)"
    assert first.a != first.b and len(first.a) == 32
    assert first.detail.startswith("first differing byte +0x"), first.text
    assert result.tallies["mem"].differ == 1 and result.tallies["submission"].differ == 0
    assert result.tallies["checkpoint"].differ >= 1
    assert "chunk 0" in result.tallies["checkpoint"].first.field


def test_more_rounds_are_more_submissions(base, tmp_path):
    longer = copies(str(tmp_path / "longer.kfdtrace"), rounds=5)
    result = diff(base, longer)
    t = result.tallies["submission"]
    assert (t.compared, t.differ, t.only) == (3, 0, [0, 2])
    assert t.first.text.startswith("B has 2 more submissions on queue 0, from submission 3 (queue 0 q) at B#")
    assert result.tallies["sync"].only == [0, 2]  # the CPU's two more waits
    assert any(line.startswith("  submissions: 3 compared, 0 differ, 2 only in B") for line in result.lines())


def test_a_stream_far_ahead_is_given_up(base, tmp_path, monkeypatch):
    """With room for 2 waiting items: A's teardown ioctls wait for B's while B still submits, and B's CPU waits
    for A's that never come; both streams are given up (and said to be), the rest still compared."""
    monkeypatch.setattr(D, "MAX_AHEAD", 2)
    longer = copies(str(tmp_path / "longer.kfdtrace"), rounds=8)
    result = diff(base, longer)
    given_up = {d.kind: d.text for d in result.others if d.text.endswith("no longer compared")}
    assert given_up["ioctl"].startswith("A runs more than 2 ioctls ahead of B from ioctl ")
    assert given_up["sync"].startswith("B runs more than 2 sync records ahead of A from sync ")
    assert result.tallies["ioctl"].uncompared[0] > 0 and result.tallies["sync"].uncompared[1] > 0
    assert result.tallies["submission"].only == [0, 5] and result.first.kind == "submission"
    assert any(line.startswith("  ioctls: ") and "not compared after the traces parted" in line
               for line in result.lines())


def frees(path: str, order: list[int]) -> str:
    """Record three named buffers filled by the GPU, freed in `order`."""
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        bufs = [gpu.alloc(4096 * (i + 1), "gtt", name=f"b{i}") for i in range(3)]
        q = gpu.sdma_queue(name="q")
        for i, b in enumerate(bufs):
            q.fill(b, i + 1, 4096)
        q.sync()
        for i in order:
            bufs[i].free()
    return path


def test_buffers_freed_in_another_order_are_the_same(tmp_path):
    """Their UNMAP/FREE ioctls and munmaps come in another order: counted as such, not a difference."""
    a, b = frees(str(tmp_path / "a.kfdtrace"), [0, 1, 2]), frees(str(tmp_path / "b.kfdtrace"), [2, 0, 1])
    result = diff(a, b)
    assert not result.differs, result.lines()
    assert result.tallies["ioctl"].reordered == 3 and result.tallies["ioctl"].differ == 0  # b2: UNMAP, FREE, munmap
    assert any("the same in another order" in line for line in result.lines())


def test_normalisation_table():
    assert [D.identity(n) for n in ("device_ids_array_ptr", "ring_base_address", "va_addr", "va", "addr")] == \
        ["address"] * 5
    assert [D.identity(n) for n in ("handle", "gpu_id", "drm_fd", "mmap_offset", "gpu_clock_counter")] == \
        ["handle", "gpu", "fd", "offset", "clock"]
    assert [D.identity(n) for n in ("size", "flags", "queue_type", "engine", "count")] == [None] * 5
    # numbered by the kernel over every thread: by their place among their thread's, or not at all
    assert [D.identity(n) for n in ("event_id", "event", "queue_id", "event_slot_index")] == \
        ["event", "event", "queue id", "event slot"]


def test_other_gpus_are_the_first_difference():
    stress, ping = (next(p for p in SAMPLES if name in p) for name in ("sdma_stress-gfx942", "ping_pong-gfx1100"))
    result = diff(stress, ping)
    assert result.first.kind == "header" and result.first.text == "GPUs: A gfx942, B gfx1100"
    assert result.tallies["submission"].only[0] > 0 and result.tallies["mem"].only[1] > 0


def test_a_truncated_trace_is_read_as_far_as_it_goes(base, tmp_path):
    """A trace cut short is recovered, not refused: it differs (exit 1), and the output says it was recovered."""
    cut = str(tmp_path / "cut.kfdtrace")
    data = open(base, "rb").read()
    open(cut, "wb").write(data[:len(data) * 6 // 10])
    res = run(base, cut)
    assert res.exit_code == 1, res.output
    lines = res.output.splitlines()
    assert lines[1].startswith(f"B: {cut} (") and "RECOVERED: trace was not closed" in lines[1]
    result = diff(base, cut)
    assert result.tallies["submission"].only == [3, 0] and result.recovered[0] is None


@pytest.mark.parametrize("path", SAMPLES, ids=os.path.basename)
def test_each_sample_against_itself(path):
    res = run(path, path)
    assert res.exit_code == 0, res.output
    result = diff(path, path)
    assert not result.differs and result.tallies["submission"].compared > 0


def test_json_has_the_same_first_difference(base, tmp_path):
    changed = copies(str(tmp_path / "changed.kfdtrace"), changed=(3, 1024))
    text, as_json = run(base, changed), run(base, changed, "--json")
    assert text.exit_code == as_json.exit_code == 1
    doc = json.loads(as_json.output)
    assert doc["differs"] is True and doc["first"]["text"] == first_line(text.output)[len("first difference: "):]
    assert (doc["first"]["a"], doc["first"]["b"]) == (4095, 1023)
    assert doc["kinds"]["packet"]["differ"] == 1 and doc["records"]["a"] == doc["records"]["b"]
    same = json.loads(run(base, base, "--json").output)
    assert same["differs"] is False and same["first"] is None


def _malformed(base: str, path: str) -> str:
    """A closed trace with the header of `base` and a doorbell record with no ring."""
    with TraceReader(base) as r:
        header = r.header
    w = TraceWriter(path, header)
    w.record("doorbell", queue=0, value=8)
    w.close()
    return path


def _damaged_header(base: str, path: str) -> str:
    data = bytearray(open(base, "rb").read())
    data[24] ^= 0xFF  # inside the header map: its CRC no longer matches
    open(path, "wb").write(data)
    return path


def _not_a_trace(base: str, path: str) -> str:
    open(path, "wb").write(b"not a trace at all\n" * 4)
    return path


def test_deeply_nested_values_are_not_followed(base, tmp_path):
    """A checkpoint's wait map is free-form: 900 nested lists in it are compared, not recursed into."""
    with TraceReader(base) as r:
        header = r.header
    nested: list = []
    for _ in range(900):
        nested = [nested]
    w = TraceWriter(str(tmp_path / "deep.kfdtrace"), header)
    w.record("checkpoint", wait={"x": nested}, buffers=[])
    w.close()
    deep = str(tmp_path / "deep.kfdtrace")
    assert not diff(deep, deep).differs
    assert diff(deep, base).tallies["checkpoint"].differ == 1


@pytest.mark.parametrize("make", [_malformed, _damaged_header, _not_a_trace])
def test_a_bad_trace_is_one_line_and_status_2(base, tmp_path, make):
    bad = make(base, str(tmp_path / "bad.kfdtrace"))
    for args in ([base, bad], [bad, base]):
        res = run(*args)
        assert res.exit_code == 2, res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)
        lines = res.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith("kfdtrace: error: ") and "Traceback" not in res.output


def vector_add(path: str, target: str, aql: bool, *, moved: bool = False, args: tuple[int, int, int] = (0, 1, 2),
               n: int = 1024, polls: int = 0) -> str:
    """Record a vector add (kernel arguments: three buffers' addresses, then n). `moved`: an unused buffer
    first, which moves every buffer, the code object and the kernel arguments; `args`: which buffers the
    kernel takes, in order; `polls`: event waits that time out first."""
    from kfdtrace.driver.errors import WaitTimeout
    from kfdtrace.driver.kernels.device import corpus

    with record(path), System.open(emulate=target) as system:
        gpu = system.devices[0]
        # (unused buffers of the sizes the others take: the emulator's GTT buffers are host mmaps, and a freed
        # one's address is taken again)
        fillers = [gpu.alloc(size, "gtt") for size in (1 << 20, *[1024 * 4] * 8)] if moved else []
        event = system.event()
        for _ in range(polls):
            with pytest.raises(WaitTimeout):
                event.wait(timeout=0.001)
        kernel = corpus(gpu).kernel("vector_add")
        bufs = [gpu.alloc(1024 * 4, "gtt", name=name) for name in ("a", "b", "c")]
        bufs[0].write(np.arange(1024, dtype=np.float32))
        bufs[1].write(np.ones(1024, np.float32))
        q = gpu.aql_queue(name="q") if aql else gpu.compute_queue(name="q")
        q.dispatch(kernel, (1024,), (64,), *(bufs[i] for i in args), np.uint32(n))
        q.sync(timeout=120)
        del fillers
    return path


@pytest.fixture(scope="module", params=[("gfx1100", False), ("gfx942", True)], ids=["pm4", "aql"])
def kernel_trace(request, tmp_path_factory) -> tuple[str, str, bool]:
    target, aql = request.param
    return vector_add(str(tmp_path_factory.mktemp("k") / "base.kfdtrace"), target, aql), target, aql


def test_kernel_arguments_and_dispatch_registers_compare_by_the_buffers_they_point_into(kernel_trace, tmp_path):
    """Every address moves (B has one buffer more, first): the kernel arguments' pointers, a PM4 queue's
    COMPUTE_PGM and kernel argument pointer registers, an AQL packet's kernel and argument addresses all name
    the same buffers, so only the extra buffer differs."""
    base, target, aql = kernel_trace
    moved = vector_add(str(tmp_path / "moved.kfdtrace"), target, aql, moved=True)
    with TraceReader(base) as ra, TraceReader(moved) as rb:
        named = [{r.fields["name"]: r.fields["va"] for r in t.records([R.BUFFER])} for t in (ra, rb)]
    assert all(named[0][k] != named[1][k] for k in "abc")
    result = diff(base, moved)
    t = result.tallies
    assert (t["packet"].compared, t["packet"].differ, t["mem"].differ, t["checkpoint"].differ) == \
        (t["packet"].compared, 0, 0, 0) and t["packet"].compared > 0
    assert t["buffer"].only == [0, 9] and result.first.text.startswith("B has ")


def test_a_kernel_argument_pointing_into_another_buffer_is_named(kernel_trace, tmp_path):
    base, target, aql = kernel_trace
    swapped = vector_add(str(tmp_path / "swapped.kfdtrace"), target, aql, args=(1, 0, 2))
    first = diff(base, swapped).first
    assert first.kind == "mem" and first.field == "pointers", first.text
    assert first.a[:2] == ["+0x0 a+0x0", "+0x8 b+0x0"] and first.b[:2] == ["+0x0 b+0x0", "+0x8 a+0x0"]


def test_a_kernel_argument_pointing_outside_every_buffer_shows_its_value(kernel_trace, tmp_path):
    """B's first kernel argument no longer lands in a buffer: the difference names A's buffer and B's value at
    that pointer, not the bytes compared (A's pointer zeroed there, B's plain word)."""
    base, _, _ = kernel_trace
    out, wild = str(tmp_path / "wild.kfdtrace"), None
    with TraceReader(base) as r:
        w, named = TraceWriter(out, r.header), {}
        for rec in R.checked(r.records()):
            f = dict(rec.fields)
            keys = [f["key"]] if rec.type in (R.MEM, R.CODE_OBJECT) else \
                [k for b in f.get("buffers") or () for k in b["keys"]] if rec.type == R.CHECKPOINT else []
            for key in keys:
                w.blob(r.blob(key), key)
            if rec.type == R.BUFFER:
                named[f["name"]] = f["va"]
            data = r.blob(f["key"]) if rec.type == R.MEM else b""
            if wild is None and "a" in named and data[:8] == named["a"].to_bytes(8, "little"):
                wild = named["a"] | 1 << 56  # its top byte set: in no buffer
                f["key"] = w.blob(wild.to_bytes(8, "little") + data[8:])
            w.record(rec.type, **f)
        w.close()
    assert wild is not None
    first = diff(base, out).first
    assert first.kind == "mem" and first.field == "key", first.text
    assert first.detail == f"first differing pointer +0x0: A a+0x0, B {wild:#x}", first.text


def test_a_kernel_argument_of_another_value_is_a_difference(kernel_trace, tmp_path):
    base, target, aql = kernel_trace
    first = diff(base, vector_add(str(tmp_path / "n.kfdtrace"), target, aql, n=1000)).first
    assert first.kind == "mem" and first.field == "key" and first.a != first.b, first.text
    # n, the fourth argument, after three pointers (which differ in value, not in the buffers they name)
    assert first.detail == "first differing byte +0x18: A 00 04 00 00 00 00 00 00, B e8 03 00 00 00 00 00 00", \
        first.text
    assert f"; {first.detail} (records" in first.text


def test_waits_that_timed_out_are_counted_not_compared(base, tmp_path):
    """How many times a program's wait times out before it is done is timing, not what it asked."""
    a = vector_add(str(tmp_path / "a.kfdtrace"), "gfx1100", False, polls=3)
    b = vector_add(str(tmp_path / "b.kfdtrace"), "gfx1100", False)
    result = diff(a, b)
    assert not result.differs, result.lines()
    # each timed-out event wait is an ioctl and an event_wait record; q.sync sleeps as often as it is woken
    assert result.polls[0] >= 6
    line = ("  waits that slept or timed out, as ioctls and as CPU wait records (not compared: how many is timing): "
            f"A {result.polls[0]}, B {result.polls[1]}")
    assert line in result.lines()
    assert run(a, b).exit_code == 0


def test_how_often_a_semaphore_wait_sleeps_is_not_a_difference(tmp_path):
    """helper 33's w02: two recordings of one workload differed by the WAIT_EVENTS a CPU semaphore wait made
    (one more for each wake-up), though every wait ended complete."""
    from .test_replay import rewrite

    path, woken = str(tmp_path / "a.kfdtrace"), str(tmp_path / "b.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        sem, q, buf = system.semaphore("s"), gpu.sdma_queue(), gpu.alloc(64 << 20, "gtt", name="b")
        q.fill(buf, 7, 64 << 20).signal(sem, 1).submit()
        sem.wait(1)  # long enough a fill that the wait sleeps
    begun: dict[int, dict] = {}

    def sleep_again(rec, reader, writer):  # the first completed WAIT_EVENTS made twice: one more wake-up
        f = dict(rec.fields)
        if rec.type == "ioctl" and f["name"] == "WAIT_EVENTS":
            begun[f["seq"]] = f
        if rec.type == "ioctl_end" and f["seq"] in begun and not begun.get(-1):
            begun[-1] = True
            again = 1 << 30
            return [("ioctl_end", f), ("ioctl", {**begun[f["seq"]], "seq": again}), ("ioctl_end", {**f, "seq": again})]
        return f

    rewrite(path, woken, sleep_again)
    assert begun.get(-1), "the wait did not sleep"
    result = diff(path, woken)
    assert not result.differs, result.lines()
    assert result.polls[1] == result.polls[0] + 1


def test_a_different_code_object_is_a_difference(tmp_path):
    """The same kernel from the plain ELF and from the offload bundle: the dispatches agree, the code objects do
    not (and replay on another family tells them apart)."""
    from kfdtrace.driver.kernels.build import BUILT, BUNDLE, object_path

    def run(path: str, source: str) -> str:
        with record(path), System.open(emulate="gfx1100") as system:
            gpu = system.devices[0]
            kernel = gpu.load(source).kernel("vector_add")
            a, b, c = (gpu.alloc(4096, "gtt", name=n) for n in "abc")
            q = gpu.compute_queue(name="q")
            q.dispatch(kernel, (1024,), (64,), a, b, c, np.uint32(1024))
            q.sync(timeout=120)
        return path

    elf = run(str(tmp_path / "elf.kfdtrace"), str(object_path("gfx1100", BUILT, False)))
    bundle = run(str(tmp_path / "bundle.kfdtrace"), str(BUILT / BUNDLE))
    result = diff(elf, bundle)
    assert result.first.kind == "code_object" and result.first.field == "key", result.lines()
    assert result.tallies["code_object"].compared == 1 and result.tallies["code_object"].differ == 1
    assert any(line.startswith("  code objects: 1 compared, 1 differ") for line in result.lines())
    assert not diff(elf, elf).differs


def ib_and_clock(path: str, moved: bool = False, value: int = 5) -> str:
    """An SDMA queue running an indirect buffer the CPU wrote (packets with addresses in it), and GPU clocks in
    a checkpointed buffer (SDMA's and PM4's timestamps)."""
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        fillers = [gpu.alloc(size, "gtt") for size in (1 << 20, *[4096] * 8)] if moved else []
        out, ib = gpu.alloc(4096, "gtt", name="out"), gpu.alloc(4096, "gtt", name="ib")
        q = gpu.sdma_queue(name="q")
        body = b"".join(q.fill(out, value, 64).timestamp(out, offset=64).discard())
        body += q.dialect.build("NOP") * ((-len(body) // 4) % 8)
        ib.write(body)
        q.packet("INDIRECT", ib_base=ib.va, ib_size=len(body) // 4).timestamp(out, offset=128).sync()
        gpu.compute_queue().timestamp(out, offset=256).sync()
        del fillers
    return path


def test_clocks_and_an_indirect_buffers_addresses_are_no_difference(tmp_path):
    """helper 34: two recordings of one workload differed by the GPU clocks in a checkpointed buffer, and by the
    addresses in the packets of an indirect buffer the CPU wrote (dword-aligned, unlike kernel arguments)."""
    a = ib_and_clock(str(tmp_path / "a.kfdtrace"))
    b = ib_and_clock(str(tmp_path / "b.kfdtrace"), moved=True)
    with TraceReader(a) as ra, TraceReader(b) as rb:
        assert [m.fields["va"] for m in ra.records(["alloc"])] != [m.fields["va"] for m in rb.records(["alloc"])]
    result = diff(a, b)
    assert result.tallies["mem"].differ == 0 and result.tallies["checkpoint"].differ == 0, result.lines()
    assert result.tallies["checkpoint"].compared >= 2
    other = diff(a, ib_and_clock(str(tmp_path / "c.kfdtrace"), value=6))  # what the IB fills, beside the clocks
    assert other.tallies["mem"].differ == 1 and other.tallies["checkpoint"].differ >= 1, other.lines()


def two_threads(path: str, first: str, kernel: str = "add_int") -> None:
    """Two threads, `first` of them (a or b) allocating, writing and dispatching before the other starts: the
    same program, its threads interleaved one way or the other. (What the process makes once, or hands out from a
    shared pool, goes to whichever thread asks first, and differs: the main thread makes those here.)"""
    import threading

    from kfdtrace.driver.kernels.device import corpus

    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        program = corpus(gpu)
        warm = gpu.alloc(4096, "gtt", name="warm")  # the pools a process makes once, made by the first thread
        q = gpu.compute_queue(name="warm.q")
        q.dispatch(program.kernel("add_int"), (64,), (64,), warm, warm, warm, np.uint32(64))
        q.sync(timeout=60)
        turn = {"a": threading.Event(), "b": threading.Event()}
        # queues are made here: slots of pools the process shares (semaphores) go in the order threads ask
        queues = {name: gpu.compute_queue(name=f"{name}.q") for name in turn}

        def work(name: str, other: str) -> None:
            turn[name].wait(30)
            src, dst = gpu.alloc(4096, "gtt", name=f"{name}.src"), gpu.alloc(4096, "gtt", name=f"{name}.dst")
            src.write(np.arange(1024, dtype=np.int32))
            q = queues[name]
            q.dispatch(program.kernel(kernel if name == "b" else "add_int"), (1024,), (64,), src, src, dst,
                       np.uint32(1024))
            q.sync(timeout=60)
            dst.read()
            turn[other].set()

        threads = [threading.Thread(target=work, args=("a", "b"), name="worker a"),
                   threading.Thread(target=work, args=("b", "a"), name="worker b")]
        for t in threads:
            t.start()
        turn[first].set()
        for t in threads:
            t.join()


def test_threads_interleaved_otherwise_are_no_difference_and_a_changed_kernel_is_named(tmp_path):
    """Found by helper 41: buffers were matched in the order of their allocations over all threads, which the
    scheduler decides; two captures of one program with two threads differed about one run in three. Each
    thread's records now form streams of their own."""
    ab, ba, changed = (str(tmp_path / f"{n}.kfdtrace") for n in ("ab", "ba", "changed"))
    two_threads(ab, "a")
    two_threads(ba, "b")
    with TraceReader(ab) as r:
        order = [b.fields["name"] for b in r.records(["buffer"]) if b.fields["name"].endswith(".src")]
    assert order == ["a.src", "b.src"]
    result = diff(ab, ba)
    assert result.first is None, result.first
    two_threads(changed, "b", kernel="vector_add")
    line = first_line(run(ab, changed).output)
    assert "the descriptor of kernel add_int" in line and "the descriptor of kernel vector_add" in line, line


def trapping_threads(path: str, first: str, destroy: bool, other_event: bool = False) -> None:
    """Two threads, `first` of them before the other: each makes a KFD event, TRAPs it on its own SDMA queue and
    waits for it, then (`destroy`) destroys it, so the other's event may take its id again; `other_event`: b's
    TRAP raises a's event instead of its own."""
    import threading

    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        bufs = {n: gpu.alloc(4096, "gtt", name=f"{n}.buf") for n in "ab"}
        queues = {n: gpu.sdma_queue(name=f"{n}.q") for n in "ab"}
        turn = {"a": threading.Event(), "b": threading.Event()}
        events = {}

        def work(name: str, other: str) -> None:
            turn[name].wait(30)
            ev = events[name] = system.event()
            raised = events["a"] if other_event and name == "b" else ev
            queues[name].fill(bufs[name], 7, 64).trap(raised.id).submit()
            raised.wait(10)
            if destroy:
                ev.destroy()
            turn[other].set()

        threads = [threading.Thread(target=work, args=(n, o), name=f"worker {n}") for n, o in (("a", "b"), ("b", "a"))]
        for t in threads:
            t.start()
        turn[first].set()
        for t in threads:
            t.join()
        for q in queues.values():
            q.destroy()


@pytest.mark.parametrize("destroy", [False, True])
def test_an_event_a_packet_raises_compares_by_its_place_among_its_threads_events(tmp_path, destroy):
    """Campaign 104: a TRAP's event id was compared as a number (the threads taking ids in the other order made it
    a difference), and an id given again after a destroy was named as the destroyed event. Raising another event
    is a difference."""
    ab, ba = str(tmp_path / "ab.kfdtrace"), str(tmp_path / "ba.kfdtrace")
    trapping_threads(ab, "a", destroy)
    trapping_threads(ba, "b", destroy)
    result = diff(ab, ba)
    assert result.first is None, result.lines()
    if not destroy:
        other = str(tmp_path / "other.kfdtrace")
        trapping_threads(other, "a", destroy, other_event=True)
        line = first_line(run(ab, other).output)
        # (the mailbox b writes first, then its TRAP: both name a's event where they named b's)
        assert "FENCE field addr: A the mailbox of event 0 of worker b, B the mailbox of event 0 of worker a" in \
            line, line


def test_a_pointer_a_packet_writes_inline_is_compared_by_where_it_points(tmp_path):
    """Campaign 115: a WRITE_DATA's inline bytes holding a buffer's address differed between two recordings of
    one workload, the buffer having been placed elsewhere; they compare as where they point, and a pointer to
    another buffer differs."""
    import struct

    def write_pointer(path: str, which: int, elsewhere: bool) -> str:
        with record(path), System.open(emulate="gfx1100") as system:
            gpu = system.devices[0]
            base = 0x7D00_0000_0000 if elsewhere else 0x7C00_0000_0000
            bufs = [gpu.alloc(4096, "gtt", va=base + i * 0x10000, name=f"b{i}") for i in range(3)]
            q = gpu.compute_queue(name="q")
            q.write_data(bufs[0], struct.pack("<Q", bufs[which].va), offset=64).submit()
            q.sync(5)
        return path

    a = write_pointer(str(tmp_path / "a.kfdtrace"), 2, False)
    same = diff(a, write_pointer(str(tmp_path / "b.kfdtrace"), 2, True))
    assert not same.differs, same.lines()
    other = diff(a, write_pointer(str(tmp_path / "c.kfdtrace"), 1, True))
    text = "\n".join(other.lines())
    assert other.differs and "[b2+0x0]" in text and "[b1+0x0]" in text, text


def test_a_wait_that_timed_out_in_one_trace_is_named_where_the_other_completed(base, tmp_path):
    """Campaign 115: B's CPU wait timed out where A's completed; timed-out waits are not compared (polling is
    timing), so the difference read as 'A has 1 more sync record', naming no wait of B's."""
    from tests.test_replay import rewrite

    out, changed = str(tmp_path / "t.kfdtrace"), []

    def edit(rec, r, w):
        if rec.type == R.CPU_WAIT and not changed:
            changed.append(rec.n)
            return {**rec.fields, "ok": False}
        return rec.fields

    rewrite(base, out, edit)
    first = diff(base, out).first.text
    assert first.startswith("A has 1 more sync record here: from sync ") and \
        f"at A#{changed[0]}, a wait that completed where B's at B#{changed[0]} timed out" in first, first
