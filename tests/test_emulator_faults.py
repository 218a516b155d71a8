"""Freeing a buffer an SDMA engine is using: a VM fault as on hardware, never a touch of freed host memory.

Each scenario runs in a child process, so a use-after-free that crashes it fails the test instead of the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from kfdtrace.driver.emulator.memory import GIL_COPY_BYTES, BufferObject, GpuVm, VmFault


def _run(code: str, timeout: float = 20) -> str:
    """Run `code` in a fresh interpreter; its stdout. Fails on a crash or a non-zero exit."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_freeing_a_polled_buffer_is_a_vm_fault():
    out = _run("""
        import time
        from kfdtrace.driver import GpuFault, System
        from kfdtrace.driver.signals import Semaphore
        with System.open(emulate="gfx942") as system:
            dev = system.devices[0]
            q, done = dev.sdma_queue(), system.semaphore()
            gate_buf = dev.alloc(4096, "gtt")
            q.wait(Semaphore.view(system, gate_buf, 0), 1).signal(done, 1).submit()
            time.sleep(0.05)  # the engine is polling the gate now
            gate_buf.free()
            try:
                done.wait(1, timeout=5)
            except GpuFault as fault:
                print("fault:", fault)
    """)
    assert "fault:" in out and "VM fault" in out


@pytest.mark.parametrize("domain", ["gtt", "userptr"])  # userptr: the user unmaps its own pages after the free
def test_freeing_the_source_of_a_running_copy_completes_or_faults(domain):
    out = _run(f"""
        import time
        from kfdtrace.driver import GpuFault, System
        # One COPY_LINEAR on gfx1100, long enough that the free lands mid-copy; src + dst stay under 1 GiB of RSS.
        size = 256 << 20
        with System.open(emulate="gfx1100") as system:
            dev = system.devices[0]
            q, done = dev.sdma_queue(), system.semaphore()
            for round in range(1, 4):
                src, dst = dev.alloc(size, {domain!r}), dev.alloc(size, "gtt")
                q.copy(dst, src, size).signal(done, round).submit()
                time.sleep(0.01)
                busy = "busy" if not q.idle else "idle"  # busy: the free races the copy
                src.free()
                try:
                    done.wait(round, timeout=5)
                    print(busy, "completed")
                except GpuFault as fault:
                    print(busy, "fault:", fault)
                    break
                dst.free()
    """, timeout=30)
    rounds = out.splitlines()
    assert any(r.startswith("busy") for r in rounds), out
    for r in rounds:
        assert r.endswith(" completed") or " fault: " in r and "VM fault" in r, r


def test_a_freed_buffer_keeps_its_host_memory_until_its_last_access_ends():
    vm = GpuVm(1)
    bo = BufferObject.create(1, 1, 0x10000, 4096, 0, is_vram=False)
    vm.map(bo)
    with vm.access(0x10008, 8, write=True) as host:
        assert host == bo.host + 8
        vm.unmap(bo)
        bo.release()
        assert bo.memfd >= 0  # still in use: the host view stays
        with pytest.raises(VmFault):  # but the GPU mapping is gone
            vm.access(0x10008, 8)
    assert bo.memfd == -1
    assert not bo.take()  # a lookup that raced the free finds nothing to hold


@pytest.mark.parametrize("n", [64, GIL_COPY_BYTES, GIL_COPY_BYTES + 4096])
@pytest.mark.parametrize("shift", [24, -24])
def test_copies_are_memmoves_whatever_their_size_and_overlap(n, shift):
    """Small copies (a slice assignment between views) and large ones (memmove) agree, overlap included."""
    vm = GpuVm(1)
    size = 2 * GIL_COPY_BYTES + 3 * 4096
    a, b = (BufferObject.create(i, 1, 0x100000 * i, size, 0, is_vram=False) for i in (1, 2))
    for bo in (a, b):
        vm.map(bo)
    data = os.urandom(size)
    a.view[:] = data
    vm.copy(b.va + 4096, a.va + 8, n)  # between buffers
    assert bytes(b.view[4096:4096 + n]) == data[8:8 + n]
    src = 4096
    vm.copy(a.va + src + shift, a.va + src, n)  # within one buffer, overlapping forwards or backwards
    expected = bytearray(data)
    expected[src + shift:src + shift + n] = data[src:src + n]
    assert bytes(a.view) == bytes(expected)
    for bo in (a, b):
        vm.unmap(bo)
        bo.release()


def test_a_copy_runs_on_from_one_buffer_into_the_one_mapped_right_after_it():
    """Campaigns 105 and 107: GPUVM translates page by page, so a copy from the end of one buffer into the next
    mapped back to back reaches both (the emulator faulted at the second's first byte); a gap still faults, at the
    first byte no buffer holds, overlap moves as memmove does."""
    vm = GpuVm(1)
    a, b, c = (BufferObject.create(i, 1, va, 4096, 0, is_vram=False) for i, va in
               ((1, 0x10000), (2, 0x11000), (3, 0x20000)))
    for bo in (a, b, c):
        vm.map(bo)
    a.view[:], b.view[:], c.view[:] = b"\x11" * 4096, b"\x22" * 4096, b"\x33" * 4096
    vm.copy(c.va, a.va + 4088, 16)
    assert bytes(c.view[:16]) == b"\x11" * 8 + b"\x22" * 8
    vm.copy(a.va + 4092, c.va + 64, 8)
    assert bytes(a.view[4092:]) == b"\x33" * 4 and bytes(b.view[:8]) == b"\x33" * 4 + b"\x22" * 4
    vm.copy(a.va + 4090, a.va + 4088, 8)  # overlapping, across the boundary
    assert bytes(a.view[4088:]) + bytes(b.view[:4]) == b"\x11" * 6 + b"\x33" * 6
    with pytest.raises(VmFault, match=f"read of 8 bytes at {b.va + 4096:#x}"):
        vm.copy(c.va, b.va + 4088, 16)  # nothing is mapped after b


def test_a_load_or_store_racing_a_free_faults_instead_of_touching_freed_memory():
    """Loads and stores take no lock: one that passed the freed check just before the free released the
    buffer finds its view released (and its memory unmapped) and faults."""
    import ctypes

    vm = GpuVm(1)
    bo = BufferObject.create(1, 1, 0x10000, 4096, 0, is_vram=False)
    vm.map(bo)
    vm.store(0x10008, ctypes.c_uint64, 7)
    assert vm.load(0x10008, ctypes.c_uint64) == 7
    bo.release()  # the free's second half, as if it ran between a lookup and its access
    with pytest.raises(VmFault, match="read of 4 bytes"):
        vm.load(0x10008, ctypes.c_uint32)
    bo.freed = False  # the check passed before the free: the released view still refuses
    with pytest.raises(VmFault, match="write of 8 bytes"):
        vm.store(0x10008, ctypes.c_uint64, 1)
    with pytest.raises(VmFault):
        vm.load(0x10008, ctypes.c_uint64)
    assert bo.memfd == -1


def test_a_small_copy_racing_a_free_faults_instead_of_touching_freed_memory():
    """A copy of up to GIL_COPY_BYTES takes no lock either (the slice assignment holds the GIL): one that found
    its buffers just before a free released one faults, naming the side that went."""
    vm = GpuVm(1)
    a, b = (BufferObject.create(i, 1, 0x100000 * i, 4096, 0, is_vram=False) for i in (1, 2))
    for bo in (a, b):
        vm.map(bo)
    a.view[:8] = b"kfdtrace"
    vm.copy(b.va, a.va, 64)
    assert bytes(b.view[:8]) == b"kfdtrace"
    b.release()  # the free's second half, as if it ran between the lookup and the copy
    with pytest.raises(VmFault, match="write of 64 bytes"):
        vm.copy(b.va, a.va, 64)
    b.freed = False  # the check passed before the free: the released view still refuses
    with pytest.raises(VmFault, match="write of 64 bytes"):
        vm.copy(b.va, a.va, 64)
    a.release()
    with pytest.raises(VmFault, match="read of 64 bytes"):
        vm.copy(b.va, a.va, 64)
    assert a.memfd == b.memfd == -1


def test_an_unmapped_buffer_is_not_found_again_however_recently_it_was_used():
    import ctypes

    vm = GpuVm(1)
    old = BufferObject.create(1, 1, 0x10000, 4096, 0, is_vram=False)
    new = BufferObject.create(1, 2, 0x10000, 4096, 0, is_vram=False)
    vm.map(old)
    for _ in range(3):  # the buffer the VM found last
        vm.store(0x10000, ctypes.c_uint32, 1)
    vm.unmap(old)
    with pytest.raises(VmFault):
        vm.load(0x10000, ctypes.c_uint32)
    vm.map(new)  # the same range, another buffer
    vm.store(0x10000, ctypes.c_uint32, 7)
    assert ctypes.c_uint32.from_address(new.host).value == 7 and ctypes.c_uint32.from_address(old.host).value == 1
    old.release()
    vm.unmap(new)
    new.release()


def test_unmapping_a_userptr_buffers_pages_waits_for_the_access_under_way():
    """The kernel's MMU notifier waits for the GPU before the user's pages go; later accesses fault."""
    import ctypes
    import threading
    import time

    pages = ctypes.create_string_buffer(8192)
    host = (ctypes.addressof(pages) + 4095) & ~4095
    vm, bo = GpuVm(1), BufferObject(1, 1, 0x10000, 4096, 0, host=host)
    vm.map(bo)
    revoked = threading.Event()
    with vm.access(0x10000, 8):
        t = threading.Thread(target=lambda: (bo.revoke(), revoked.set()))
        t.start()
        time.sleep(0.05)
        assert not revoked.is_set()  # still waiting for this access
    t.join(5)
    assert revoked.is_set()
    with pytest.raises(VmFault):
        vm.access(0x10000, 8)


@pytest.mark.parametrize("executable", [False, True])
def test_code_runs_only_from_memory_allocated_executable(executable):
    """Campaign 89: the emulated GPU ran code copied into a buffer allocated without EXECUTABLE. KFD maps such a
    buffer without execute permission (amdgpu_amdkfd_gpuvm.c) and the gfxhub faults the fetch. The dispatch waits
    while the object's bytes move to a new buffer at the same address, executable or not."""
    out = _run(f"""
        import numpy as np
        from kfdtrace.driver import GpuFault, System
        from kfdtrace.driver.kernels.device import corpus
        with System.open(emulate="gfx942") as system:
            gpu = system.devices[0]
            program = corpus(gpu)
            a, b, c = (gpu.alloc(256, "gtt") for _ in range(3))
            a.write(np.ones(64, np.float32)); b.write(np.ones(64, np.float32))
            go, done = system.semaphore("go"), system.semaphore("done")
            q = gpu.compute_queue()
            q.wait(go, 1).dispatch(program.kernel("vector_add"), (64,), (64,), a, b, c, np.uint32(64))
            q.signal(done, 1).submit()
            va, size, image = program.buffer.va, program.buffer.size, program.buffer.read()
            program.free()
            gpu.alloc(size, "vram", va=va, executable={executable}).write(image)
            go.signal(1)
            try:
                done.wait(1, timeout=60)
                print("ran:", np.frombuffer(c.read(0, 8), np.float32))
            except GpuFault as exc:
                print("fault:", exc)
    """, timeout=120)
    if executable:
        assert out.startswith("ran: [2. 2.]"), out
    else:
        assert out.startswith("fault:") and "VM fault" in out, out
