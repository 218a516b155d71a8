"""clang offload bundles (HIP fat binaries): several targets' code objects in one file, and picking the device's.

Layout (clang/lib/Driver/OffloadBundler.cpp, checked against clang-offload-bundler-19's output): the magic
"__CLANG_OFFLOAD_BUNDLE__", a u64 entry count, then per entry u64 offset, u64 size, u64 id length and the id, e.g.
"hipv4-amdgcn-amd-amdhsa--gfx942:xnack-" (<offload kind>-<triple>-<target id>; the host entry is
"host-x86_64-unknown-linux-gnu-"). All little-endian; offsets count from the start of the bundle.

Target ids (LLVM AMDGPUUsage "Target ID"): a processor then optional ":feature+" / ":feature-" settings. A feature
left out means "any": the object runs whatever the device's setting. An entry fits a device when the processors
match and every feature both name agrees. Of the fitting entries, one whose every feature the device confirms wins
over one relying on a setting the device does not state, then the one confirming most features.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kfdtrace.driver.code_object_errors import BadCodeObject, TargetNotInBundle

__all__ = ["BUNDLE_MAGIC", "BundleEntry", "TargetId", "entries", "is_bundle", "select"]

BUNDLE_MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"
COMPRESSED_MAGIC = b"CCOB"  # clang --offload-compress
_U64 = struct.Struct("<Q")
_ENTRY = struct.Struct("<QQQ")
_AMDGCN_TRIPLE = ("amdgcn", "amd", "amdhsa", "")


@dataclass(frozen=True)
class TargetId:
    """A processor with its feature settings: gfx942:sramecc+:xnack- is ("gfx942", {"sramecc": True, ...})."""

    processor: str
    features: tuple[tuple[str, bool], ...] = ()

    @classmethod
    def parse(cls, text: str) -> TargetId:
        """Read "gfx90a:xnack+"; ValueError if a feature has no +/- sign."""
        processor, *rest = text.strip().split(":")
        features = {}
        for f in rest:
            if len(f) < 2 or f[-1] not in "+-":
                raise ValueError(f"target id {text!r}: feature {f!r} has no + or - sign")
            features[f[:-1]] = f[-1] == "+"
        return cls(processor.lower(), tuple(sorted(features.items())))

    def fits(self, device: TargetId) -> bool:
        """Whether code built for this target id runs on `device` (a feature either leaves out runs on any)."""
        theirs = dict(device.features)
        return self.processor == device.processor and all(theirs.get(f, on) == on for f, on in self.features)

    def rank(self, device: TargetId) -> tuple[bool, int]:
        """How well this (fitting) target id suits `device`: (all its features confirmed, features confirmed)."""
        stated = dict(device.features)
        confirmed = sum(f in stated for f, _ in self.features)
        return confirmed == len(self.features), confirmed

    def __str__(self) -> str:
        return self.processor + "".join(f":{f}{'+' if on else '-'}" for f, on in self.features)


@dataclass(frozen=True)
class BundleEntry:
    """One bundled file: its id as written, the AMDGPU target id (None for the host or another triple), bytes, and
    where they start in the bundle."""

    id: str
    target: TargetId | None
    data: bytes
    offset: int


def is_bundle(data: bytes) -> bool:
    """Whether `data` starts as a clang offload bundle (compressed or not)."""
    return data[:len(BUNDLE_MAGIC)] == BUNDLE_MAGIC or data[:len(COMPRESSED_MAGIC)] == COMPRESSED_MAGIC


def _target_of(bundle_id: str) -> TargetId | None:
    parts = bundle_id.split("-", 5)
    if len(parts) != 6 or tuple(parts[1:5]) != _AMDGCN_TRIPLE or parts[0] == "host":
        return None
    try:
        return TargetId.parse(parts[5])
    except ValueError as e:
        raise BadCodeObject(f"offload bundle entry {bundle_id!r}: {e}") from None


def entries(data: bytes) -> list[BundleEntry]:
    """Every entry of a bundle; BadCodeObject if the table or an entry runs past the end of the data."""
    if data[:len(COMPRESSED_MAGIC)] == COMPRESSED_MAGIC:
        raise BadCodeObject("compressed offload bundle (CCOB): unbundle it first with clang-offload-bundler "
                            "-unbundle, or build without --offload-compress")
    if data[:len(BUNDLE_MAGIC)] != BUNDLE_MAGIC:
        raise BadCodeObject(f"not a clang offload bundle (starts {bytes(data[:8])!r})")
    pos = len(BUNDLE_MAGIC)
    if pos + 8 > len(data):
        raise BadCodeObject(f"offload bundle truncated at {len(data)} bytes, before its entry count")
    (count,), pos = _U64.unpack_from(data, pos), pos + 8
    if count > (len(data) - pos) // _ENTRY.size:
        raise BadCodeObject(f"offload bundle claims {count} entries; {len(data)} bytes cannot hold them")
    out = []
    for i in range(count):
        if pos + _ENTRY.size > len(data):
            raise BadCodeObject(f"offload bundle truncated in the header of entry {i}")
        offset, size, id_len = _ENTRY.unpack_from(data, pos)
        pos += _ENTRY.size
        if id_len > len(data) - pos:
            raise BadCodeObject(f"offload bundle entry {i}: its id runs past the end of the file")
        try:
            bundle_id = bytes(data[pos:pos + id_len]).decode("ascii")
        except UnicodeDecodeError:
            raise BadCodeObject(f"offload bundle entry {i}: its id is not ASCII") from None
        pos += id_len
        if offset > len(data) or size > len(data) - offset:
            raise BadCodeObject(f"offload bundle entry {bundle_id!r}: bytes {offset}..{offset + size} run past "
                                f"the end of the {len(data)}-byte file")
        out.append(BundleEntry(bundle_id, _target_of(bundle_id), bytes(data[offset:offset + size]), offset))
    return out


def select(data: bytes, target: str) -> bytes:
    """The code object of a bundle that runs on `target` ("gfx942", or with features "gfx90a:xnack-").

    Of the entries that fit, the best by `TargetId.rank` wins (the first of equals); TargetNotInBundle lists the
    targets the bundle holds when none fits.
    """
    device = TargetId.parse(target)
    found = [e for e in entries(data) if e.target is not None]
    fitting = [e for e in found if e.target.fits(device) and e.data]  # type: ignore[union-attr]
    if not fitting:
        held = ", ".join(str(e.target) for e in found) or "none"
        raise TargetNotInBundle(f"offload bundle has no code object for {device}; it holds: {held}")
    return max(fitting, key=lambda e: e.target.rank(device)).data  # type: ignore[union-attr]
