"""KFD signal events set from the GPU: the kernel sets an event from an interrupt only when the event's mailbox,
its slot in the event page, was written first (kfd_events.c), and the driver, capture and replay follow that."""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import subprocess
import sys
import time

import pytest

from kfdtrace.capture import record
from kfdtrace.driver import DeviceError, System
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.backend import open_syscalls
from kfdtrace.driver.kfd import Kfd
from kfdtrace.driver.memory import PAGE
from kfdtrace.driver.pm4 import IntSel
from kfdtrace.replay.engine import EXIT_OK, Options
from kfdtrace.replay.session import replay_trace
from kfdtrace.replay.translate import IDENTITY
from kfdtrace.traces.format import TraceReader

from .emulated import slow_sdma

UNSIGNALED = K.UNSIGNALED_EVENT_SLOT


def _slot(system, event_id: int) -> int:
    """The event page slot of `event_id`, as the CPU reads it."""
    return ctypes.c_uint64.from_address(system._event_page.cpu_addr(8 * event_id)).value


def _fired(system, event_id: int, timeout_ms: int = 300) -> bool:
    return system.wait_events([event_id], timeout_ms)


def test_signal_event_ids_start_at_one_and_their_slots_read_unsignaled(emulated):
    system = emulated("gfx942")
    events = [system.event() for _ in range(3)]
    assert [e.id for e in events] == [1, 2, 3]  # id 0 is the kernel's (kfd_event_init_process)
    assert all(_slot(system, e.id) == UNSIGNALED for e in events)
    assert _slot(system, 0) == UNSIGNALED and _slot(system, 4095) == UNSIGNALED  # the whole page, set by the kernel


@pytest.mark.parametrize("target", ["gfx90a", "gfx1100"])
def test_a_trap_without_its_mailbox_written_sets_nothing(emulated, target):
    system = emulated(target)
    q, ev = system.devices[0].sdma_queue(), system.event()
    q.packet("TRAP", int_context=ev.id).sync(timeout=5)
    assert not _fired(system, ev.id)
    q.trap(ev.id).sync(timeout=5)  # the mailbox, then the interrupt
    assert _fired(system, ev.id)
    assert _slot(system, ev.id) == UNSIGNALED  # acknowledged: the next interrupt needs a new write


def test_an_end_of_pipe_interrupt_sets_the_event_whose_mailbox_it_wrote(emulated):
    system = emulated("gfx1100")
    q, ev, out = system.devices[0].compute_queue(), system.event(), system.devices[0].alloc(PAGE, "gtt")
    interrupt = dict(data_sel=1, int_sel=IntSel.INTERRUPT_AFTER_WRITE_CONFIRM, int_ctxid=ev.id)
    q.packet("RELEASE_MEM", addr=out.va, data=7, **interrupt).sync(timeout=5)
    assert out.numpy("<u4")[0] == 7 and not _fired(system, ev.id)
    q.packet("RELEASE_MEM", addr=system.event_mailbox(ev.id), data=ev.id, **interrupt).sync(timeout=5)
    assert _fired(system, ev.id)


def test_an_interrupt_naming_no_written_mailbox_sets_every_event_whose_mailbox_was_written(emulated):
    system = emulated("gfx942")
    q = system.devices[0].sdma_queue()
    a, b, c = system.event(), system.event(), system.event()
    q.fence(system.event_mailbox(b.id), b.id).fence(system.event_mailbox(c.id), c.id)
    q.packet("TRAP", int_context=a.id).sync(timeout=5)  # a's slot is unwritten: the kernel looks at every slot
    assert (_fired(system, a.id, 50), _fired(system, b.id), _fired(system, c.id)) == (False, True, True)


def test_gpu_signals_wake_a_cpu_wait_by_interrupt_on_every_queue_kind(emulated):
    system = emulated("gfx942,gfx1100")
    for dev in system.devices:
        for q in (dev.sdma_queue(), dev.compute_queue()):
            sem = system.semaphore()
            q.signal(sem, 3).submit()
            assert _fired(system, sem.event_id, 5000), q.label  # woken, not found by a later poll
            assert sem.value == 3


def _events_until_enospc(make) -> list[int]:
    made = []
    with pytest.raises(DeviceError) as err:
        while True:
            made.append(make())
    assert err.value.errno == errno.ENOSPC and 0 not in made
    return made


def test_signal_events_run_out_with_the_event_pages_slots(emulated):
    system = emulated("gfx1030")  # the driver hands the kernel its 32 KiB page: 4096 slots, id 0 the kernel's
    assert len(_events_until_enospc(system.create_event_id)) == K.KFD_SIGNAL_EVENT_LIMIT - 1


def _bare_kfd() -> Kfd:
    """/dev/kfd of an emulated machine no System opened: no event page given to the kernel."""
    return Kfd(open_syscalls(emulate="gfx942"))


SIGNAL = dict(event_type=K.EventType.SIGNAL, auto_reset=1, node_id=0, event_page_offset=0)


def test_without_a_page_given_the_kernels_own_has_the_slots_user_mode_maps():
    kfd = _bare_kfd()
    try:  # the kernel's own page, of which user mode has mapped nothing: the oldest user mode's 256 slots
        assert len(_events_until_enospc(lambda: kfd.ioctl("CREATE_EVENT", **SIGNAL).event_id)) == 255
    finally:
        kfd.close()


def test_the_kernels_own_event_page_maps_once_a_signal_event_made_it():
    kfd = _bare_kfd()
    prot, offset = mmap.PROT_READ | mmap.PROT_WRITE, K.mmap_offset(K.MmapType.EVENTS)
    try:
        with pytest.raises(OSError) as err:  # no signal event yet: no page (kfd_event_mmap)
            kfd.sys.mmap(0, PAGE, prot, mmap.MAP_SHARED, kfd.fd, offset)
        assert err.value.errno == errno.EINVAL
        kfd.ioctl("CREATE_EVENT", **SIGNAL)
        kfd.sys.munmap(kfd.sys.mmap(0, PAGE, prot, mmap.MAP_SHARED, kfd.fd, offset), PAGE)
        with pytest.raises(OSError):  # more than the page
            kfd.sys.mmap(0, 2 * K.KFD_EVENT_PAGE_SIZE, prot, mmap.MAP_SHARED, kfd.fd, offset)
    finally:
        kfd.close()


@pytest.fixture(scope="module")
def trapped(tmp_path_factory) -> str:
    """An SDMA queue and a PM4 queue each wake a CPU event wait with an interrupt (a third event made first)."""

    path = str(tmp_path_factory.mktemp("mailboxes") / "trapped.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        out = gpu.alloc(PAGE, "gtt", name="out")
        decoy, by_sdma, by_cp = system.event(), system.event(), system.event()
        gpu.sdma_queue().fill(out, 7, PAGE).trap(by_sdma.id).submit()
        by_sdma.wait(5)
        interrupt = dict(data_sel=1, int_sel=IntSel.INTERRUPT_AFTER_WRITE_CONFIRM, int_ctxid=by_cp.id)
        gpu.compute_queue().packet("RELEASE_MEM", addr=system.event_mailbox(by_cp.id), data=by_cp.id,
                                   **interrupt).submit()
        by_cp.wait(5)
        for e in (decoy, by_sdma, by_cp):
            e.destroy()
    return path


def test_replayed_mailbox_writes_go_to_the_replay_events_slots(trapped):
    """The recorded mailbox writes name the recording's event page slots; each instance's events have slots of
    their own (the first instance's ids are the recorded ones, the others' not): every wait is woken."""

    report = replay_trace(trapped, Options(timeout=2), emulate="gfx1100", concurrent=3)
    assert report.status == EXIT_OK, report.lines()


_STATES = """
import json, sys
from kfdtrace.replay.engine import Instance, Options, device_map, survey
from kfdtrace.replay.session import open_target
from kfdtrace.traces.format import TraceReader

with TraceReader(sys.argv[1]) as trace, open_target(trace, "gfx1100", None, False) as system:
    devices = device_map(trace, system, None)
    s = survey(trace, devices, None)
    states, extra = [], None
    for _ in range(2):
        instance, seen = Instance(trace, system, devices, s, Options(timeout=2)), []
        on_event = instance._on_event
        instance._on_event = lambda r, on=on_event, i=instance, seen=seen: (on(r), seen.append(
            i.relocation.state if r.fields["type"] == 0 else None))
        assert instance.run().status == 0
        states.append([state for state in seen if state is not None])
        extra = extra or system.event()  # an event of the replay's own takes the first recorded id
    s.release()
print(json.dumps(states))
"""


def test_the_first_instance_keeps_the_recorded_mailboxes_in_place(trapped):
    """With the recorded event ids (no event of the replay's own made before them) and the event page where it
    was recorded, the relocation stays the identity: translations are kept across submissions and loops. (A
    process of its own, as a replay is: the recording's event page keeps its address in the recording's.)"""
    done = subprocess.run([sys.executable, "-c", _STATES, trapped], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout)
    assert first == [IDENTITY] * 3 and len(second) == 3 and IDENTITY not in second


def test_an_event_set_by_another_queues_interrupt_shows_its_queue_complete_only_up_to_the_mailbox(tmp_path):
    """An interrupt whose event's mailbox nobody wrote sets every event whose mailbox was written: here the event
    of a queue that wrote its mailbox and then began a long copy, before the TRAP after it. A wait on that event
    returning shows the queue complete up to the mailbox write, not through the copy: the checkpoint at that
    wait leaves the copy's destination for later (the capture took the TRAP to have run, and hashed a buffer
    still being written: a replay then DIVERGED from a recording that did not)."""
    path = str(tmp_path / "stray.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        src, dst = gpu.alloc(64 << 20, "gtt", name="src"), gpu.alloc(64 << 20, "gtt", name="dst")
        src.fill(0x5A)
        mine, stray = system.event(), system.event()
        slow, other = gpu.sdma_queue(name="slow"), gpu.sdma_queue(name="other")
        slow.fence(system.event_mailbox(mine.id), mine.id).copy(dst, src, 64 << 20).packet(
            "TRAP", int_context=mine.id).submit()
        time.sleep(0.005)  # the mailbox written, the copy under way
        other.packet("TRAP", int_context=stray.id).submit()  # stray's mailbox unwritten: every slot is looked at
        mine.wait(5)
        slow.sync()
    with TraceReader(path) as r:
        waited = [c.fields for c in r.records(["checkpoint"])]
    assert waited and "dst" not in {b["name"] for b in waited[0]["buffers"]}
    assert replay_trace(path, Options(timeout=5), emulate="gfx942").status == EXIT_OK


def test_a_system_puts_its_event_page_where_asked_and_gives_its_addresses_back_at_close():
    """A replay opens its System with the recorded event page's address. The kernel frees the page itself, but
    the addresses reserved for it are the process's: a System closed gave them back (a benchmark replaying in
    one process again and again found them taken, the mailboxes moved and nothing cached)."""
    with System(open_syscalls(emulate="gfx942")) as first:
        va = first.event_mailbox(0)
    for _ in range(2):
        with System(open_syscalls(emulate="gfx942"), event_page_va=va) as again:
            assert again.event_mailbox(0) == va


def test_a_poll_loop_s_timed_out_wait_leaves_the_signal_to_the_wait_that_saw_it(tmp_path, monkeypatch):
    """Campaign 110: a thread polled an auto-reset event with a short timeout, and its copy + TRAP landed only
    after one poll had timed out. Replayed faster, that poll (waited out as recorded: the thread polled again)
    took the event's signal, and the next wait, which the recording saw signaled, hung."""
    from kfdtrace.driver.errors import WaitTimeout

    path = str(tmp_path / "poll.kfdtrace")
    with monkeypatch.context() as patch:
        slow_sdma(patch, "_copy_linear")
        with record(path), System.open(emulate="gfx942") as system:
            gpu = system.devices[0]
            src, dst = gpu.alloc(4096, "gtt", name="src"), gpu.alloc(4096, "gtt", name="dst")
            ev, gate = system.event(), system.semaphore("gate")
            q = gpu.sdma_queue()
            q.wait(gate, 1).copy(dst, src, 4096).trap(ev.id).submit()
            gate.signal(1)  # (the engine's thread copies: the CPU goes on to wait)
            with pytest.raises(WaitTimeout):
                ev.wait(0.3)
            ev.wait(10)
    with TraceReader(path) as r:
        assert [rec.fields["ok"] for rec in r.records({"event_wait"})] == [False, True]
    report = replay_trace(path, Options(timeout=5), emulate="gfx942")  # (copies at full speed: the poll sees it)
    assert report.status == EXIT_OK, report.lines()


def test_a_new_event_takes_the_freed_id_whose_pending_mailbox_write_sets_it_after_a_stray_trap(tmp_path):
    """Campaign 110: an event is destroyed while a held queue still has its mailbox write and TRAP; another queue
    raises a TRAP naming an id no event has (legal: it sets nothing); the program's next event takes the freed id,
    and the held packets set it. The replay made an event of its own for the stray id, which took the freed id:
    the new event got another, the held packets set the replay's own, and the wait hung."""
    path = str(tmp_path / "reuse.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        out = gpu.alloc(1 << 20, "gtt", name="out")
        gate = system.semaphore("gate")
        old = system.event()
        held, other = gpu.sdma_queue(name="held"), gpu.sdma_queue(name="other")
        held.wait(gate, 1).fill(out, 0xAB, 1 << 20).trap(old.id).submit()
        old.destroy()
        other.packet("TRAP", int_context=1000).submit()
        while not other.idle:  # (not sync(): its event would take the freed id)
            time.sleep(0.001)
        new = system.event()
        assert new.id == old.id
        gate.signal(1)
        new.wait(5)
        held.sync()
    report = replay_trace(path, Options(timeout=5), emulate="gfx942")
    assert report.status == EXIT_OK, report.lines()


def test_an_id_freed_for_the_next_event_is_kept_from_instances_replaying_beside(tmp_path, monkeypatch):
    """Campaign 110: with --concurrent, instances share one process's event ids. One destroyed an event whose held
    packets were still pending, another instance's event took the freed id, and the first instance's next event
    (which took that id in the recording) got another: the held packets set the other instance's event, and the
    wait hung (1 run in 4 with 3 instances). Here the other instance is one event made right after the destroy."""
    from kfdtrace.replay.engine import Instance

    path = str(tmp_path / "reborn.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        out, gate = gpu.alloc(1 << 20, "gtt", name="out"), system.semaphore("gate")
        old, held = system.event(), gpu.sdma_queue(name="held")
        held.wait(gate, 1).fill(out, 0xAB, 1 << 20).trap(old.id).submit()
        old.destroy()
        new = system.event()
        assert new.id == old.id
        gate.signal(1)
        new.wait(5)
        held.sync()
    destroy, intruders = Instance._on_event_destroy, []

    def taken_beside(self, r):
        destroy(self, r)
        intruders.append(self.system.event())  # another instance's, made as this one freed its event

    monkeypatch.setattr(Instance, "_on_event_destroy", taken_beside)
    report = replay_trace(path, Options(timeout=3), emulate="gfx942")
    assert report.status == EXIT_OK and intruders, report.lines()


def _wait(system, ids: list[int], timeout_ms: int, wait_all: bool = False) -> int:
    """A bare WAIT_EVENTS on `ids`: its wait_result."""
    data = (K.kfd_event_data * len(ids))()
    for d, eid in zip(data, ids, strict=True):
        d.event_id = eid
    return system.kfd.ioctl("WAIT_EVENTS", events_ptr=ctypes.addressof(data), num_events=len(ids),
                            wait_for_all=int(wait_all), timeout=timeout_ms).wait_result


def test_setting_an_auto_reset_event_wakes_every_thread_sleeping_on_it(emulated):
    """Campaign 110: the kernel's set_event wakes every waiter and leaves an auto-reset event that woke one
    unsignaled; the emulator woke one waiter, and the other slept out its timeout."""
    import threading

    with System.open(emulate="gfx942") as system:
        eid = system.create_event_id(auto_reset=True)
        results: dict[int, int] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _wait(system, [eid], 3000)))
                   for i in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while sum(len(ev.waiters) for ev in system.sys.machine.events._events.values()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        system.kfd.ioctl("SET_EVENT", event_id=eid)
        for t in threads:
            t.join()
        assert results == {0: K.WaitResult.COMPLETE, 1: K.WaitResult.COMPLETE}
        assert _wait(system, [eid], 0) == K.WaitResult.TIMEOUT  # (it woke them: not left set)


def test_a_wait_takes_an_auto_reset_events_signal_as_it_begins_even_if_it_times_out(emulated):
    """kfd_events.c init_event_waiter: each waited event's signal is taken as the wait begins; a wait for all of
    two events, one set, times out and has taken that one's."""
    with System.open(emulate="gfx942") as system:
        a, b = system.create_event_id(), system.create_event_id()
        system.kfd.ioctl("SET_EVENT", event_id=a)
        assert _wait(system, [a, b], 0, wait_all=True) == K.WaitResult.TIMEOUT
        assert _wait(system, [a], 0) == K.WaitResult.TIMEOUT


def test_destroying_an_event_fails_the_wait_sleeping_on_it_at_once(emulated):
    """kfd_events.c destroy_event wakes the event's waiters, and their wait fails with EIO (the emulator let it
    sleep out its timeout)."""
    import threading

    with System.open(emulate="gfx942") as system:
        eid = system.create_event_id()
        failed: list[BaseException] = []

        def waiter() -> None:
            try:
                _wait(system, [eid], 10_000)
            except DeviceError as exc:
                failed.append(exc)

        t0 = time.monotonic()
        thread = threading.Thread(target=waiter)
        thread.start()
        while not system.sys.machine.events._events[eid].waiters:
            time.sleep(0.001)
        system.kfd.ioctl("DESTROY_EVENT", event_id=eid)
        thread.join()
        assert time.monotonic() - t0 < 5
        assert len(failed) == 1 and getattr(failed[0], "errno", None) == errno.EIO


def test_a_non_signal_event_takes_the_lowest_free_id(emulated):
    """create_other_event allocates from KFD_FIRST_NONSIGNAL_EVENT_ID with idr_alloc: the lowest free id."""
    with System.open(emulate="gfx942") as system:
        make = lambda: system.kfd.ioctl("CREATE_EVENT", event_type=K.EventType.HW_EXCEPTION,  # noqa: E731
                                        auto_reset=1, node_id=0, event_page_offset=0).event_id
        first, second = make(), make()
        system.kfd.ioctl("DESTROY_EVENT", event_id=first)
        assert make() == first and second == first + 1
