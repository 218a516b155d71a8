"""What can be wrong with a code object a user hands the driver: one exception class per kind, one-line messages."""

from __future__ import annotations

from kfdtrace.driver.errors import KfdTraceError

__all__ = ["BadCodeObject", "BadMetadata", "CodeObjectError", "MissingMetadata", "TargetNotInBundle",
           "UnknownKernel", "WrongTarget"]


class CodeObjectError(KfdTraceError, ValueError):
    """A code object (or offload bundle) the driver cannot load; the message names what and where."""


class BadCodeObject(CodeObjectError):
    """Not an ELF, truncated, not an AMDGPU HSA code object, or a malformed ELF structure, symbol or relocation."""


class WrongTarget(CodeObjectError):
    """The code object is for another GPU than the device (or for one kfdtrace does not support)."""


class MissingMetadata(CodeObjectError):
    """No NT_AMDGPU_METADATA note: the object is code object v2/v3 or was stripped."""


class BadMetadata(CodeObjectError):
    """The metadata note is not the msgpack map the ABI describes, or disagrees with the kernel descriptor."""


class UnknownKernel(CodeObjectError, KeyError):
    """A kernel name the code object does not define; the message lists the kernels it has."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TargetNotInBundle(CodeObjectError):
    """An offload bundle without a code object for the device; the message lists the targets it holds."""
