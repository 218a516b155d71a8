"""Backends every integration test runs on: the emulator (several families and a mixed 2-GPU machine), and
the real KFD when /dev/kfd has a GPU."""

from __future__ import annotations

import pytest

from kfdtrace.driver.syscalls import kfd_usable
from kfdtrace.driver.system import System

EMULATED = ["gfx942", "gfx90a", "gfx1030", "gfx1100", "gfx1201", "gfx942,gfx1100"]
BACKENDS = [pytest.param("real", marks=pytest.mark.hardware, id="real")] + [pytest.param(e, id=e) for e in EMULATED]


def open_backend(name: str) -> System:
    if name == "real":
        if not kfd_usable():
            pytest.skip("no GPU behind /dev/kfd on this machine")
        return System.open()
    return System.open(emulate=name)


@pytest.fixture(params=BACKENDS)
def system(request):
    """A System on each backend in turn."""
    s = open_backend(request.param)
    yield s
    s.close()


@pytest.fixture
def emulated():
    """Open an emulated system by target list; closed at teardown."""
    opened = []

    def make(targets: str = "gfx942") -> System:
        s = System.open(emulate=targets)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()
