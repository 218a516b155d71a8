"""A queue's kernel-argument arena (driver/kernarg_pool.py): slices cut in order, aligned, wrapping at the end,
back only once the engine is past their dispatch; a buffer of its own for a dispatch that finds no room. The cutting
on a stand-in device, then PM4 and AQL queues on the emulator with their engine held back, then a trace of
dispatches wrapping the arena: each slice's bytes recorded exactly, replayed, and read back by a dump."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kfdtrace.capture import record
from kfdtrace.driver import DeviceError, System
from kfdtrace.driver.aql_queue import HsaSignal
from kfdtrace.driver.errors import BoundsError
from kfdtrace.driver.kernarg_pool import KernargPool, KernargSlice
from kfdtrace.driver.kernels.device import corpus
from kfdtrace.replay.engine import EXIT_OK, Options
from kfdtrace.replay.session import replay_trace
from kfdtrace.traces import records as R
from kfdtrace.traces.contents import KnownMemory
from kfdtrace.traces.format import Record, TraceReader
from kfdtrace.traces.walk import TraceState
from tests.test_dump import run

ARENA = 1024


class FakeBuffer:
    def __init__(self, va: int, size: int, name: str):
        self.va, self.size, self.name, self.freed = va, size, name, False
        self.label = name
        self.writes: list[tuple[int, bytes]] = []

    def write(self, data: bytes, offset: int = 0) -> None:
        self.writes.append((offset, bytes(data)))

    def free(self) -> None:
        self.freed = True


class FakeDevice:
    def __init__(self):
        self.buffers: list[FakeBuffer] = []

    def alloc(self, size: int, domain: str, *, name: str, role: str) -> FakeBuffer:
        assert domain == "gtt" and role == "kernargs"
        buf = FakeBuffer(0x100000 * (len(self.buffers) + 1), size, name)
        self.buffers.append(buf)
        return buf


def pool(reclaim=lambda: None) -> tuple[KernargPool, FakeDevice]:
    dev = FakeDevice()
    return KernargPool(dev, "q", reclaim, size=ARENA), dev


def offsets(p: KernargPool, *slices: KernargSlice) -> list[int]:
    return [s.va - p.buffer.va for s in slices]


def test_slices_are_cut_in_order_aligned_and_never_across_the_end():
    p, dev = pool()
    a, b, c = p.alloc(100, 16, "k"), p.alloc(100, 64, "k"), p.alloc(8, 16, "k")
    assert len(dev.buffers) == 1 and dev.buffers[0].name == "q.kernargs" and dev.buffers[0].size == ARENA
    assert offsets(p, a, b, c) == [0, 128, 240]
    for s in (a, b, c):
        s.free()
    d = p.alloc(800, 16, "k")  # 256 + 800 would cross the end: it starts again at the arena's start
    assert offsets(p, d) == [0] and isinstance(d, KernargSlice)


def test_space_comes_back_only_up_to_the_oldest_live_slice():
    p, _ = pool()
    a, b, c = (p.alloc(320, 64, "k") for _ in range(3))
    assert offsets(p, a, b, c) == [0, 320, 640]
    b.free()  # out of order: marked, its space stays taken behind a
    c.free()
    assert not isinstance(p.alloc(320, 64, "k"), KernargSlice)
    a.free()  # now all three come back
    d = p.alloc(960, 64, "k")
    assert isinstance(d, KernargSlice) and offsets(p, d) == [0]
    d.free()
    d.free()  # twice is harmless


def test_a_segment_bigger_than_the_arena_gets_a_buffer_of_its_own():
    reclaimed = []
    p, dev = pool(lambda: reclaimed.append(1))
    big = p.alloc(ARENA + 1, 16, "big")
    assert not isinstance(big, KernargSlice) and big.name == "q.kernargs big" and big.size == ARENA + 1
    assert not reclaimed  # no point asking the queue: it never fits
    assert isinstance(p.alloc(ARENA, 16, "k"), KernargSlice)


def test_a_full_arena_has_the_queue_reclaim_then_falls_back_to_a_buffer():
    live: list[KernargSlice] = []
    p, dev = pool(lambda: [s.free() for s in live[:1]])  # the engine is past the oldest dispatch only
    live += [p.alloc(512, 16, "k"), p.alloc(512, 16, "k")]
    third = p.alloc(512, 16, "k")
    assert isinstance(third, KernargSlice) and third.va == live[0].va
    live[:] = []
    fourth = p.alloc(16, 16, "k")
    assert not isinstance(fourth, KernargSlice) and len(dev.buffers) == 2


def test_a_slice_writes_inside_itself_only():
    p, dev = pool()
    p.alloc(64, 64, "k")
    s = p.alloc(32, 16, "k")
    s.write(b"x" * 8, 24)
    assert dev.buffers[0].writes == [(64 + 24, b"x" * 8)]
    with pytest.raises(BoundsError, match="outside its 0x20 bytes"):
        s.write(b"x" * 9, 24)


def test_freeing_the_pool_frees_the_arena_and_refuses_more_slices():
    p, dev = pool()
    s = p.alloc(64, 16, "k")
    p.free()
    assert dev.buffers[0].freed
    s.free()  # a slice freed after its arena (the queue's held buffers go last) is only marked
    with pytest.raises(DeviceError, match="q was destroyed"):
        p.alloc(64, 16, "k")


# -- on queues -----------------------------------------------------------------------------------------
ELEMENTS = 64
N = 24  # dispatches held back at once: more than a small arena holds


@pytest.fixture(params=["gfx942", "gfx1100"])
def system(request):
    with System.open(emulate=request.param) as s:
        yield s


def _setup(system: System, aql: bool):
    gpu = system.devices[0]
    kernel = corpus(gpu).kernel("vector_add")
    a = np.arange(N * ELEMENTS, dtype=np.float32)
    bufs = [gpu.alloc(N * ELEMENTS * 4, "gtt", name=name) for name in ("a", "b", "c")]
    bufs[0].write(a)
    bufs[1].write(a)
    q = gpu.aql_queue(name="q") if aql else gpu.compute_queue(name="q")
    q.kernarg_pool.size = 2048  # before the first dispatch allocates it: room for a few dispatches only
    return gpu, kernel, bufs, q


def _dispatch(q, kernel, bufs, i: int, aql: bool) -> None:
    at = i * ELEMENTS * 4
    q.dispatch(kernel, (ELEMENTS,), (ELEMENTS,), *(b.va + at for b in bufs), np.uint32(ELEMENTS))
    if not aql:
        q.submit()


@pytest.mark.parametrize("aql", [False, True], ids=["pm4", "aql"])
def test_many_dispatches_in_flight_on_a_stalled_queue(system, aql, monkeypatch):
    """While the engine is held back no slice is cut twice: dispatches the arena has no room for get buffers of
    their own; once the engine is past them, the arena's space is used again, and every sum is right."""
    gpu, kernel, bufs, q = _setup(system, aql)
    got = []
    real = q.kernarg_pool.alloc
    monkeypatch.setattr(q.kernarg_pool, "alloc", lambda *a: got.append(real(*a)) or got[-1])
    if aql:
        gate = HsaSignal(system, 1, "gate")
        q.barrier_and([gate])
    else:
        gate = system.semaphore("gate")
        q.wait(gate, 1).submit()
    for i in range(N):
        _dispatch(q, kernel, bufs, i, aql)
    slices = [m for m in got if isinstance(m, KernargSlice)]
    own = [m for m in got if not isinstance(m, KernargSlice)]
    assert slices and own and all(m.name == "q.kernargs vector_add" for m in own)
    spans = sorted((s.va, s.va + s.size) for s in slices)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False)), spans
    assert not q.idle
    gate.signal(0 if aql else 1)
    q.sync(timeout=60)
    c = np.frombuffer(bufs[2].read(), np.float32)
    assert (c == 2 * np.arange(N * ELEMENTS, dtype=np.float32)).all()
    got.clear()
    _dispatch(q, kernel, bufs, 0, aql)
    assert isinstance(got[0], KernargSlice)  # the queue freed what its engine is past: the arena has room
    assert got[0].va in range(q.kernarg_pool.buffer.va, q.kernarg_pool.buffer.va + 2048)
    q.sync(timeout=60)
    assert all(m.handle is None for m in own)  # the buffers of their own, freed once the engine was past


@pytest.mark.parametrize("aql", [False, True], ids=["pm4", "aql"])
def test_destroying_the_queue_frees_its_arena(system, aql):
    gpu, kernel, bufs, _ = _setup(system, aql)
    before = set(gpu.buffers)
    q = gpu.aql_queue(name="q2") if aql else gpu.compute_queue(name="q2")
    assert q.kernarg_pool.buffer is None  # a queue that never dispatches has none
    _dispatch(q, kernel, bufs, 0, aql)
    arena = q.kernarg_pool.buffer
    assert arena.name == "q2.kernargs" and arena in gpu.buffers
    q.destroy()
    assert arena.handle is None and set(gpu.buffers) == before


def test_a_trace_of_dispatches_wrapping_the_arena_holds_each_slice_exactly_and_replays(tmp_path):
    """Each dispatch's kernel arguments are recorded as the bytes written, slices of later rounds overlapping those
    of earlier ones at other offsets (two kernels, two segment sizes); the trace replays, and a dump reads every
    dispatch's arguments back."""
    path = str(tmp_path / "k.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu, kernel, bufs, q = _setup(system, aql=True)
        info = corpus(gpu).kernel("grid_info")  # one pointer: a smaller segment than vector_add's
        d = gpu.alloc(N * 1024, "gtt", name="d")
        for i in range(N):
            _dispatch(q, kernel, bufs, i, aql=True)
            q.dispatch(info, (16,), (16,), d.va + i * 1024)
            if i % 2:
                q.sync(timeout=60)
        sizes = {k.kernel.metadata.kernarg_segment_size for k in (kernel, info)}
        first = [(bufs[0].va + i * ELEMENTS * 4, d.va + i * 1024)[k] for i in range(N) for k in (0, 1)]
    with TraceReader(path) as r:
        state, writes = TraceState(r.header), []
        for rec in r.records():
            state.apply(rec)
            if rec.type == R.MEM and (b := state.buffer_at(rec.fields["va"])) is not None and b.role == "kernargs":
                writes.append((rec.fields["va"], rec.fields["size"]))
    assert len(writes) == 2 * N and {size for _, size in writes} == sizes and len(sizes) == 2
    assert any(x < y < x + n for x, n in set(writes) for y, _ in set(writes))  # later rounds cut at other offsets
    assert replay_trace(path, Options(), emulate_recorded=True).status == EXIT_OK
    out = tmp_path / "bufs"
    assert run("dump", path, "--buffers", str(out)).exit_code == 0
    kernargs = sorted(f for f in os.listdir(out) if f.endswith(".in.0.q.kernargs.bin"))
    assert [(out / f).read_bytes()[:8] for f in kernargs] == [np.uint64(v).tobytes() for v in first]


def test_what_a_trace_knows_of_overlapping_writes_is_the_later_one():
    """traces/contents.py keeps the writes in recorded order (trim writes them back so) and reads the later one
    where two overlap; a buffer written so is not known whole."""
    state = TraceState({})
    memory = KnownMemory(state, 16 << 10)
    blobs = {b"a": b"A" * 32, b"b": b"B" * 32, b"c": b"C" * 8}
    records = [Record(0, "alloc", dict(handle=1, gpu=1, va=0x1000, size=0x40, domain="gtt", flags=0, cpu=None))]
    records += [Record(n, "mem", dict(va=va, size=size, key=key))
                for n, (va, size, key) in enumerate([(0x1000, 32, b"a"), (0x1010, 32, b"b"), (0x1008, 8, b"c")], 1)]
    for r in records:
        memory.apply(r, state.apply(r))
    buf, contents = memory.at(0x1000)
    assert list(contents.chunks) == [0x1000, 0x1010, 0x1008]
    assert contents.read(0x1000, 48, blobs.__getitem__) == b"A" * 8 + b"C" * 8 + b"B" * 32
    assert contents.read(0x1020, 32, blobs.__getitem__) is None and contents.whole(buf) is None
