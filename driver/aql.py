"""AQL (HSA architected queuing language) packets, and the amd_queue_t / amd_signal_t layouts CP firmware reads.

Every AQL packet is 64 bytes (16 dwords), 64-byte aligned, declared once here in the table machinery of
driver/packets.py, so the driver's builder, decoders, printers, relocators and the emulated packet processor
read the same definitions. Header (u16 @0, hsa.h `hsa_packet_header_t`): the packet type in bits 7:0 is the
header constant; BARRIER b8, acquire fence scope b10:9, release fence scope b12:11. AMD vendor packets
(type VENDOR_SPECIFIC) add `AmdFormat` (u8 @2) as a second header constant (hsa_ext_amd.h).

Addresses are tagged: `kernel_object`, `kernarg_address`, and signal handles, which are `Signal`s (an `Addr`
with a role): a `completion` signal is an amd_signal_t the processor writes when the packet is done (its value
decremented, its event mailbox written), a `dependency` signal one whose value the packet waits on. The PM4-IB
vendor packet's body is a PM4 INDIRECT_BUFFER packet (dwords 1..4); its `ib_base` is tagged `indirect=`, and
`AQL.indirect_dialect` says what an AQL indirect buffer holds: PM4 packets of the device's family.

Sources (facts only; amd-facts §9, offsets compiled from the headers): ROCm/ROCR-Runtime@c7785a6d
runtime/hsa-runtime/inc/hsa.h (packet types, header bits, packet layouts, signal conditions), hsa_ext_amd.h
(vendor packet header, HSA_AMD_PACKET_TYPE_BARRIER_VALUE), amd_hsa_queue.h (amd_queue_t), amd_hsa_signal.h
(amd_signal_t); core/runtime/amd_aql_queue.cpp `ExecutePM4` (struct amd_aql_pm4_ib, AMD_AQL_FORMAT_PM4_IB = 1,
dw_cnt_remain = 0xA); tinygrad@a9069c17 ops_amd.py `AMDComputeAQLQueue` (header 0x1502, the PM4-IB packet).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from kfdtrace.driver.packets import Addr, Dialect, Field, Packet, PacketDef

__all__ = ["AQL", "CONDITIONS", "FULL_FENCES", "PACKET_SIZE", "AmdFormat", "AmdQueue", "AmdSignal", "AqlDialect",
           "FenceScope", "HsaQueue", "PacketType", "QueueProperties", "Signal", "SignalCondition", "SignalKind",
           "dispatch_packet", "header", "pm4_ib_body", "pm4_ib_packet"]

PACKET_SIZE = 64  # bytes of every AQL packet


class PacketType(IntEnum):
    """hsa.h `hsa_packet_type_t`."""

    VENDOR_SPECIFIC = 0
    INVALID = 1
    KERNEL_DISPATCH = 2
    BARRIER_AND = 3
    AGENT_DISPATCH = 4
    BARRIER_OR = 5


class AmdFormat(IntEnum):
    """AmdFormat of an AMD vendor packet: AMD_AQL_FORMAT_PM4_IB (amd_aql_queue.cpp), hsa_ext_amd.h
    HSA_AMD_PACKET_TYPE_BARRIER_VALUE."""

    PM4_IB = 1
    BARRIER_VALUE = 2


class FenceScope(IntEnum):
    """hsa.h `hsa_fence_scope_t` (3 is not a scope)."""

    NONE = 0
    AGENT = 1
    SYSTEM = 2


class SignalCondition(IntEnum):
    """hsa.h `hsa_signal_condition_t`: how a signal's value compares with an operand."""

    EQ = 0
    NE = 1
    LT = 2
    GTE = 3


# What each condition means, for CPU waits and the BARRIER_VALUE packet: compare(signal value, operand).
CONDITIONS: dict[SignalCondition, Callable[[int, int], bool]] = {
    SignalCondition.EQ: lambda v, r: v == r,
    SignalCondition.NE: lambda v, r: v != r,
    SignalCondition.LT: lambda v, r: v < r,
    SignalCondition.GTE: lambda v, r: v >= r,
}


def signed64(x: int) -> int:
    """The low 64 bits of `x` as a signed value (hsa_signal_value_t)."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >> 63 else x


class SignalKind(IntEnum):
    """amd_hsa_signal.h `amd_signal_kind_t`."""

    INVALID = 0
    USER = 1
    DOORBELL = -1
    LEGACY_DOORBELL = -2


class QueueProperties(IntEnum):
    """amd_hsa_queue.h `amd_queue_properties_t` bits of amd_queue_t.queue_properties."""

    ENABLE_TRAP_HANDLER = 1 << 0
    IS_PTR64 = 1 << 1
    ENABLE_TRAP_HANDLER_DEBUG_SGPRS = 1 << 2
    ENABLE_PROFILING = 1 << 3
    USE_SCRATCH_ONCE = 1 << 4


@dataclass(frozen=True)
class Signal(Addr):
    """An hsa_signal_t handle: the address of an amd_signal_t, 0 for none. `role` "completion": the processor
    decrements its value when the packet completes (tag `written`); "dependency": the packet waits on it.
    `settled`: the packet completes only once this signal is at 0, so its completion shows it was; `any_of`: the
    packet completes once one of its signals so tagged is at 0 (so with one of them given, once that one is);
    `compared`: (operand, mask, condition) fields: the packet completes once (value & mask) `condition` operand."""

    role: str = "completion"
    settled: bool = False
    any_of: bool = False
    compared: tuple[str, str, str] | None = None


TYPE = Field("type", 0, 0, 8)
FORMAT = Field("amd_format", 0, 16, 8)
_HEADER = (Field("barrier", 0, 8, 1), Field("acquire_fence_scope", 0, 9, 2), Field("release_fence_scope", 0, 11, 2))
_COMPLETION = Signal("completion_signal", 14, written=True, completes="barrier")
def _dependencies(settled: bool = False, any_of: bool = False) -> tuple[Signal, ...]:
    return tuple(Signal(f"dep_signal{i}", 2 + 2 * i, role="dependency", settled=settled, any_of=any_of)
                 for i in range(5))


def _pkt(name: str, type_: PacketType, *fields: Field | Addr, amd_format: AmdFormat | None = None) -> PacketDef:
    constants = {TYPE: type_} if amd_format is None else {TYPE: type_, FORMAT: amd_format}
    return PacketDef(name, constants, (*_HEADER, *fields), size=PACKET_SIZE // 4)


_DEFS = (
    # A slot no packet has been assigned to (the ring is filled with these); the processor waits on it.
    _pkt("INVALID", PacketType.INVALID),
    # grid_size_* count work-items, not workgroups; kernel_object is the 64-byte kernel descriptor's address.
    _pkt("KERNEL_DISPATCH", PacketType.KERNEL_DISPATCH,
         Field("dimensions", 0, 16, 2),
         Field("workgroup_size_x", 1, 0, 16), Field("workgroup_size_y", 1, 16, 16), Field("workgroup_size_z", 2, 0, 16),
         Field("grid_size_x", 3), Field("grid_size_y", 4), Field("grid_size_z", 5),
         Field("private_segment_size", 6), Field("group_segment_size", 7),
         Addr("kernel_object", 8, kernel="kernarg_address"), Addr("kernarg_address", 10), _COMPLETION),
    # Complete once every non-zero dependency signal is 0 (a zero handle counts as satisfied).
    _pkt("BARRIER_AND", PacketType.BARRIER_AND, *_dependencies(settled=True), _COMPLETION),
    # A function the agent runs: the emulator refuses it; declared so its addresses are tagged.
    _pkt("AGENT_DISPATCH", PacketType.AGENT_DISPATCH,
         Field("agent_type", 0, 16, 16), Addr("return_address", 2, written=True),
         Field("arg0", 4, 0, 64), Field("arg1", 6, 0, 64), Field("arg2", 8, 0, 64), Field("arg3", 10, 0, 64),
         _COMPLETION),
    # Complete once any non-zero dependency signal is 0 (a zero handle counts as not satisfied).
    _pkt("BARRIER_OR", PacketType.BARRIER_OR, *_dependencies(any_of=True), _COMPLETION),
    # amd_aql_pm4_ib: dwords 1..4 hold one PM4 INDIRECT_BUFFER packet (header, ib_base, size and control bits
    # as the device's PM4 dialect defines them), then dw_cnt_remain = 0xA (the 10 dwords after it).
    _pkt("PM4_IB", PacketType.VENDOR_SPECIFIC,
         Field("ib_header", 1), Addr("ib_base", 2, align=2, indirect="ib_size"),
         Field("ib_size", 4, 0, 20), Field("ib_control", 4, 20, 12), Field("dw_cnt_remain", 5), _COMPLETION,
         amd_format=AmdFormat.PM4_IB),
    # hsa_amd_barrier_value_packet_t: complete once (signal.value & mask) `cond` value (64-bit, signed).
    _pkt("BARRIER_VALUE", PacketType.VENDOR_SPECIFIC,
         Signal("signal", 2, role="dependency", compared=("value", "mask", "cond")),
         Field("value", 4, 0, 64), Field("mask", 6, 0, 64),
         Field("cond", 8), _COMPLETION,
         amd_format=AmdFormat.BARRIER_VALUE),
)

_TYPE_MASK = TYPE.mask


class _TypeIndex(dict):
    """Header key -> definition, where only VENDOR_SPECIFIC packets have an AmdFormat: any other packet's
    bits 23:16 belong to it (a dispatch's setup), so they are dropped from its key."""

    def get(self, key: int, default: PacketDef | None = None) -> PacketDef | None:
        vendor = key & _TYPE_MASK == PacketType.VENDOR_SPECIFIC
        return super().get(key if vendor else key & _TYPE_MASK, default)


class AqlDialect(Dialect):
    """The AQL packets: the same definitions on every family. `indirect_dialect`: what an indirect buffer
    (the PM4-IB packet's) holds -- PM4 packets in the dialect of the device's family (Family.pm4_dialect)."""

    indirect_dialect = "pm4"
    # producers on several threads ring out of order, and the highest index rung counts: the processor takes the
    # packets in slot order, waiting at one whose header is still INVALID (HSA; ROCR's multi-producer queues)
    ordered_doorbells = False
    # (offset, bytes) from a written completion signal's handle that a profiling queue fills with GPU clocks:
    # amd_signal_t start_ts and end_ts (amd_queue_t ENABLE_PROFILING; ROCR Queue::SetProfiling)
    clocked = (32, 16)

    def __init__(self, name: str, defs: tuple[PacketDef, ...]):
        super().__init__(name, defs)
        self._index = _TypeIndex(self._index)
        self.signals: dict[str, tuple[Signal, ...]] = {
            d.name: tuple(f for f in d.fields if isinstance(f, Signal)) for d in self.defs}
        self._barriers = frozenset(d for d in self.defs if any(s.role == "dependency" for s in self.signals[d.name]))

    def waits(self, d: PacketDef) -> bool:
        """A barrier packet waits on its dependency signals."""
        return d in self._barriers

    def completion(self, packet: Packet) -> int:
        """The completion signal handle of a packet (0: none), from its `Signal` field of role completion."""
        return next((packet.fields[s.name] for s in self.signals[packet.name] if s.role == "completion"), 0)

    def dependencies(self, packet: Packet) -> list[int]:
        """The dependency signal handles of a packet, in table order (zeros included)."""
        return [packet.fields[s.name] for s in self.signals[packet.name] if s.role == "dependency"]

    def passes(self, packet: Packet, value: Callable[[int], int | None]) -> bool | None:
        """Whether a packet's dependency signals let it complete now, each one's value read by `value(handle)`:
        every non-zero `settled` one at 0 (BARRIER_AND), some non-zero `any_of` one at 0 (BARRIER_OR), a `compared`
        one's (value & mask) against the operand by the condition, both signed (BARRIER_VALUE); None where a value
        cannot be read. ValueError for a condition hsa.h does not define."""
        fields, every, some, any_of = packet.fields, [], [], False
        for s in self.signals[packet.name]:
            if s.role != "dependency":
                continue
            any_of |= s.any_of
            handle = fields[s.name]
            if not handle and s.compared is None:
                continue
            v = value(handle)
            if v is None:
                return None
            if s.compared is None:
                (some if s.any_of else every).append(v == 0)
                continue
            operand, mask, condition = (fields[f] for f in s.compared)
            compare = CONDITIONS.get(condition)
            if compare is None:
                raise ValueError(f"{packet.name} {s.compared[2]}={condition} is not a signal condition (0..3)")
            every.append(compare(signed64(v & mask), signed64(operand)))
        return all(every) and (any(some) or not any_of)

    def settled(self, packet: Packet) -> list[int]:
        """The signal handles the packet's completion shows were at 0: BARRIER_AND's non-zero dependencies, and
        BARRIER_OR's when it has only one."""
        signals, fields = self.signals[packet.name], packet.fields
        some = [h for s in signals if s.any_of and (h := fields[s.name])]
        return [h for s in signals if s.settled and (h := fields[s.name])] + (some if len(some) == 1 else [])

    def reached(self, packet: Packet) -> list[tuple[int, int]]:
        """(signal handle, value) of each signal the packet's completion shows reached a value: compared whole
        (mask all ones) for GTE or EQ, a wait for a value as a POLL_REGMEM's is (BARRIER_VALUE); value None for EQ
        0, a wait for the signal at 0 as a BARRIER_AND's is."""
        fields, out = packet.fields, []
        for s in self.signals[packet.name]:
            if s.compared is not None and (h := fields[s.name]):
                operand, mask, condition = (fields[f] for f in s.compared)
                if mask == (1 << 64) - 1 and condition in (SignalCondition.GTE, SignalCondition.EQ):
                    out.append((h, None if condition == SignalCondition.EQ and operand == 0 else operand))
        return out


AQL = AqlDialect("aql", _DEFS)


def unassigned(packet: bytes) -> bool:
    """Whether the 64-byte AQL packet `packet` holds an INVALID header, which marks a slot no packet was assigned
    to: the packet processor waits there until the type changes (HSA), for good if nothing changes it."""
    return packet[0] == PacketType.INVALID


def assigned(data: bytes) -> int:
    """The bytes of `data` (slots in order) before the first slot no packet was assigned to: the packets the
    processor takes."""
    return next((at for at in range(0, len(data), PACKET_SIZE) if unassigned(data[at:at + PACKET_SIZE])), len(data))


def header(type_: PacketType, *, barrier: bool = True, acquire: FenceScope = FenceScope.SYSTEM,
           release: FenceScope = FenceScope.SYSTEM) -> int:
    """The u16 packet header (tinygrad's dispatch header is header(KERNEL_DISPATCH) = 0x1502)."""
    return type_ | barrier << 8 | acquire << 9 | release << 11


def pm4_ib_packet(pm4: Dialect, ib: int, dwords: int, completion_signal: int = 0, **header_fields: int) -> Packet:
    """The PM4-IB vendor packet running `dwords` dwords of PM4 at GPU address `ib`: its body is the INDIRECT_BUFFER
    the device's PM4 dialect builds (valid set), dw_cnt_remain 0xA as ROCR's ExecutePM4 writes it."""
    jump = pm4.packet("INDIRECT_BUFFER", ib_base=ib, ib_size=dwords, valid=1).encode()
    ib_header, _, _, control = struct.unpack("<4I", jump)
    return AQL.packet("PM4_IB", ib_header=ib_header, ib_base=ib, ib_size=dwords, ib_control=control >> 20,
                      dw_cnt_remain=0xA, completion_signal=completion_signal, **header_fields)


def pm4_ib_body(packet: Packet) -> bytes:
    """The PM4 INDIRECT_BUFFER packet a PM4-IB vendor packet holds (its dwords 1..4), for the PM4 dialect."""
    return packet.encode()[4:20]


# -- memory layouts the packet processor reads (x86-64, HSA_LARGE_MODEL) ------------------------------------
class AmdSignal(ctypes.LittleEndianStructure):
    """amd_hsa_signal.h `amd_signal_t` (64 bytes, 64-byte aligned; an hsa_signal_t handle is its address)."""

    _fields_ = [
        ("kind", ctypes.c_int64),
        ("value", ctypes.c_int64),  # union with hardware_doorbell_ptr
        ("event_mailbox_ptr", ctypes.c_uint64),  # 0: no interrupt
        ("event_id", ctypes.c_uint32),
        ("reserved1", ctypes.c_uint32),
        ("start_ts", ctypes.c_uint64),
        ("end_ts", ctypes.c_uint64),
        ("queue_ptr", ctypes.c_uint64),  # union with reserved2
        ("reserved3", ctypes.c_uint32 * 2),
    ]


class HsaQueue(ctypes.LittleEndianStructure):
    """hsa.h `hsa_queue_t` (40 bytes)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("base_address", ctypes.c_uint64),
        ("doorbell_signal", ctypes.c_uint64),
        ("size", ctypes.c_uint32),  # packets, a power of 2
        ("reserved1", ctypes.c_uint32),
        ("id", ctypes.c_uint64),
    ]


class AmdQueue(ctypes.LittleEndianStructure):
    """amd_hsa_queue.h `amd_queue_t` (256 bytes, 64-byte aligned): KFD's write pointer is write_dispatch_id
    (@56), its read pointer read_dispatch_id (@128), both in packets and never wrapping."""

    _fields_ = [
        ("hsa_queue", HsaQueue),
        ("caps", ctypes.c_uint32),
        ("reserved1", ctypes.c_uint32 * 3),
        ("write_dispatch_id", ctypes.c_uint64),
        ("group_segment_aperture_base_hi", ctypes.c_uint32),
        ("private_segment_aperture_base_hi", ctypes.c_uint32),
        ("max_cu_id", ctypes.c_uint32),
        ("max_wave_id", ctypes.c_uint32),
        ("max_legacy_doorbell_dispatch_id_plus_1", ctypes.c_uint64),
        ("legacy_doorbell_lock", ctypes.c_uint32),
        ("reserved2", ctypes.c_uint32 * 9),
        ("read_dispatch_id", ctypes.c_uint64),
        ("read_dispatch_id_field_base_byte_offset", ctypes.c_uint32),
        ("compute_tmpring_size", ctypes.c_uint32),
        ("scratch_resource_descriptor", ctypes.c_uint32 * 4),
        ("scratch_backing_memory_location", ctypes.c_uint64),
        ("scratch_backing_memory_byte_size", ctypes.c_uint64),
        ("scratch_wave64_lane_byte_size", ctypes.c_uint32),
        ("queue_properties", ctypes.c_uint32),
        ("reserved3", ctypes.c_uint32 * 18),  # async-reclaim fields of amd_queue_v2_t, unused here
    ]


# The header fields every helper's packet carries: tinygrad's and ROCR's (barrier, system-scope fences).
FULL_FENCES = {"barrier": 1, "acquire_fence_scope": FenceScope.SYSTEM, "release_fence_scope": FenceScope.SYSTEM}


def dispatch_packet(kernel_object: int, grid: Sequence[int], workgroup: Sequence[int], kernarg_address: int,
                    *, private_segment_size: int = 0, group_segment_size: int = 0, completion_signal: int = 0,
                    barrier: bool = True) -> Packet:
    """A KERNEL_DISPATCH packet: `grid` in work-items (1 to 3 dimensions, as the packet's setup says),
    `workgroup` in work-items per group; segment sizes in bytes per work-item (private) and per group (LDS)."""
    if not 1 <= len(grid) <= 3 or len(workgroup) != len(grid):
        raise ValueError(f"grid {tuple(grid)} and workgroup {tuple(workgroup)} need the same 1 to 3 dimensions")
    dims = len(grid)
    grid, workgroup = (*grid, 1, 1)[:3], (*workgroup, 1, 1)[:3]
    if any(g < 1 for g in grid) or any(w < 1 for w in workgroup):
        raise ValueError(f"grid {grid} and workgroup {workgroup} sizes must be positive")
    return AQL.packet("KERNEL_DISPATCH", **{**FULL_FENCES, "barrier": int(barrier)}, dimensions=dims,
                      workgroup_size_x=workgroup[0], workgroup_size_y=workgroup[1], workgroup_size_z=workgroup[2],
                      grid_size_x=grid[0], grid_size_y=grid[1], grid_size_z=grid[2],
                      private_segment_size=private_segment_size, group_segment_size=group_segment_size,
                      kernel_object=kernel_object, kernarg_address=kernarg_address,
                      completion_signal=completion_signal)
