"""Code objects loaded on a device: `program = device.load(path_or_bytes)`, `program.kernel("saxpy")`.

The image (every PT_LOAD segment at its offset, relocated for the buffer's address) goes into one executable,
CPU-visible VRAM buffer, as tinygrad's loader places it; the kernel descriptor and entry point addresses a
dispatch needs are that buffer's address plus the offsets the code object gives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from kfdtrace.driver.code_object import CodeObject, Kernel, load
from kfdtrace.driver.memory import HUGE, PAGE, Buffer

if TYPE_CHECKING:
    from kfdtrace.driver.system import Device

__all__ = ["LoadedKernel", "Program", "object_name"]

_TARGET_IN_NAME = re.compile(r"[-.]gfx[0-9a-f]+")


@dataclass(frozen=True)
class LoadedKernel:
    """A kernel of a loaded program: its code object entry and where its descriptor and code are on the GPU."""

    program: Program
    kernel: Kernel

    @property
    def name(self) -> str:
        return self.kernel.name

    @property
    def descriptor_address(self) -> int:
        """The GPU address of the 64-byte kernel descriptor (an AQL dispatch packet's kernel_object)."""
        return self.program.buffer.va + self.kernel.descriptor_offset

    @property
    def entry_address(self) -> int:
        """The GPU address of the first instruction (COMPUTE_PGM_LO/HI for a PM4 dispatch, << 8)."""
        return self.program.buffer.va + self.kernel.entry_offset


class Program:
    """One code object loaded on one device (a bundle gives the device's entry); free() releases its memory."""

    def __init__(self, device: Device, source: bytes | bytearray | memoryview | str | PathLike,
                 name: str | None = None):
        self.device = device
        data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else Path(source).read_bytes()
        self.code: CodeObject = load(data, device.target.name)  # CodeObjectError names what does not fit
        size = -(-self.code.image_size // PAGE) * PAGE
        if self.code.image_align > PAGE:  # buffers of HUGE bytes or more start on a HUGE boundary
            size = max(size, HUGE)
        kernels = list(self.code.kernels)
        held = ", ".join(kernels) if len(kernels) <= 3 else f"{kernels[0]} and {len(kernels) - 1} more"
        label = name or f"code object ({held})"
        self.buffer: Buffer = device.alloc(size, "vram", executable=True, name=label, role="code")
        try:
            self.buffer.write(self.code.image(self.buffer.va))
        except BaseException:
            self.buffer.free()
            raise
        device.sys.annotate("code_object", va=self.buffer.va, size=self.buffer.size, data=data,
                            target=str(self.code.target_id), name=object_name(source, name),
                            kernels={k.name: self.buffer.va + k.descriptor_offset for k in self.code.kernels.values()},
                            entries={k.name: self.buffer.va + k.entry_offset for k in self.code.kernels.values()})

    def __repr__(self) -> str:
        return f"<Program {self.code.target_id} at {self.buffer.va:#x} kernels={list(self.code.kernels)}>"

    def kernel(self, name: str) -> LoadedKernel:
        """The kernel named `name` (UnknownKernel lists those there are)."""
        return LoadedKernel(self, self.code.kernel(name))

    def free(self) -> None:
        self.buffer.free()


def object_name(source: object, name: str | None) -> str | None:
    """What a replay calls a loaded object (`--code-object NAME=PATH`, `DIR/<name>.<gfx>.co`): the name given, else
    the file's stem without its target ("corpus" for corpus-gfx942.co); None for bytes without a name."""
    if name is not None:
        return name
    if isinstance(source, str | PathLike):
        return _TARGET_IN_NAME.sub("", Path(source).stem) or None
    return None
