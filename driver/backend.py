"""Choosing the syscall backend: the real KFD, or the emulated GPU (the embedded default without one)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kfdtrace.driver.syscalls import KFD_TOPOLOGY, RealSyscalls, Syscalls, kfd_usable
from kfdtrace.driver.topology import DirectorySysfs, Topology, TopologyError, read_topology

DEFAULT_EMULATION = "gfx942,gfx942"
ENV_EMULATE = "KFDTRACE_EMULATE"
ENV_EMULATE_FROM = "KFDTRACE_EMULATE_FROM"


Wrapper = Callable[[Syscalls], Syscalls]
_wrappers: list[Wrapper] = []


@contextmanager
def wrapping(wrap: Wrapper) -> Iterator[None]:
    """While active, every backend open_syscalls() opens is handed through `wrap` (how capture records)."""
    _wrappers.append(wrap)
    try:
        yield
    finally:
        _wrappers.remove(wrap)


def open_syscalls(emulate: str | None = None, emulate_from: str | None = None, *,
                  topology: Topology | None = None) -> Syscalls:
    """`emulate` ("gfx942,gfx1100"), `emulate_from` (a copied sysfs topology tree) or `topology` (emulate
    exactly these nodes: replay --emulate-recorded) force the emulated GPU; so do KFDTRACE_EMULATE /
    KFDTRACE_EMULATE_FROM. Otherwise the real KFD when it has a GPU, else the emulated default. Active
    wrappers (see `wrapping`) are applied."""
    syscalls = open_backend(emulate, emulate_from, topology=topology)
    for wrap in _wrappers:
        syscalls = wrap(syscalls)
    return syscalls


def open_backend(emulate: str | None = None, emulate_from: str | None = None, *,
                 topology: Topology | None = None) -> Syscalls:
    """The backend open_syscalls() chooses, unwrapped."""
    if topology is not None and (emulate or emulate_from):
        raise ValueError("give one of an emulated GPU list, a topology tree or a topology to emulate")
    emulate = emulate or os.environ.get(ENV_EMULATE) or None
    emulate_from = emulate_from or os.environ.get(ENV_EMULATE_FROM) or None
    if emulate and emulate_from:
        raise ValueError("give either an emulated GPU list or a topology tree to emulate, not both")
    if topology is None:
        if not emulate and not emulate_from and kfd_usable():
            return RealSyscalls()
        from kfdtrace.driver.emulator.boards import emulated_topology, parse_emulate_spec

        if emulate_from:
            topology = topology_from_directory(emulate_from)
        else:
            topology = emulated_topology(parse_emulate_spec(emulate or DEFAULT_EMULATION))
    from kfdtrace.driver.emulator.kfd import EmulatedMachine, EmulatedSyscalls

    return EmulatedSyscalls(EmulatedMachine(topology))


def topology_from_directory(directory: str) -> Topology:
    """Read a KFD topology tree copied from a machine: a copy of /sys/devices/virtual/kfd/kfd/topology
    (DIR/nodes/N/...), or a tree holding the whole sysfs path (DIR/sys/devices/virtual/kfd/kfd/topology)."""
    if os.path.isdir(os.path.join(directory, "nodes")):
        return read_topology(DirectorySysfs(directory), root="/")
    if os.path.isdir(os.path.join(directory, KFD_TOPOLOGY.lstrip("/"))):
        return read_topology(DirectorySysfs(directory))
    raise TopologyError(f"{directory} holds no KFD topology: expected {directory}/nodes/N/properties "
                        f"(copy {KFD_TOPOLOGY} from the machine)")
