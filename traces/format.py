"""The kfdtrace file format: reader and writer in one module (byte layouts in traces/FORMAT.md).

A file is a header, a stream of frames (zstd-compressed msgpack: records, or content-addressed blobs), an
index frame and a fixed-size footer. Each frame goes to the file with one write(2) on an unbuffered fd, so a
process killed at any moment leaves every frame it flushed readable; without a footer the reader rebuilds
the index by scanning the frames. The writer compresses and writes full frames on a background thread, in
order (zstd and write(2) release the GIL), while the recording thread packs the next; flush() writes on the
caller's thread and returns once everything is in the kernel: the blobs as a frame, the records no frame holds
yet to the journal past the frames (JOURNAL_GAP), so that frequent flushes make no small frames.

Traces are untrusted input: every length is checked against a bound before anything is allocated, decoding
a frame counts each container once and each element once, up to max(MIN_FRAME_OBJECTS, stored bytes /
STORED_BYTES_PER_OBJECT) (a few KB of zstd can declare 64 MiB of empty arrays: 64M objects; an honest frame
of at most 1 MiB raw counts fewer than 2M, as every object takes a byte, and a bigger honest record is mostly
bins and hashes, which do not compress), every frame head and payload is covered by a CRC32, a blob is
checked against its key when read, the index is checked against the frames, msgpack extension types are
refused, nothing in a file is ever executed, and every error is one `TraceError` line.

Blob keys are the file's: XXH3-128 in formats 2.x and 3.x, SHA-256's first 16 bytes in 1.x (`KEY_FUNCTIONS`; a reader's
`blob_key` is its file's, and replay verifies checkpoints with it). XXH3 is not cryptographic: keys name and
deduplicate content and, with the CRCs, catch corruption; a matching key makes nothing trusted.

The writer packs with msgspec (the same bytes msgpack's Packer makes, faster; a test holds them equal), each
record into the pending frame's buffer as it is recorded, so a record that cannot be stored is refused there.
Unlike msgpack's Packer it also packs a few richer types (datetimes, UUIDs and decimals as str, enums as their
values, dataclasses as maps, sets as arrays): callers record plain data, which records.py checks.

Version policy: FORMAT_MAJOR changes when an existing byte layout, codec, hash or meaning changes (readers
read the majors they know, each by its rules, and refuse others); FORMAT_MINOR changes for additions an older
reader can ignore: record types, record fields, header and index keys, frame kinds. A reader accepts every
minor of a major it reads. 2.0 changed the key function (1.0: SHA-256) and added the clock field; 3.0 added
the delta field, which changes what a submission's ring bytes mean as stored.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import stat
import struct
import threading
import weakref
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import msgpack
import xxhash
import zstandard

FORMAT_MAJOR = 3
FORMAT_MINOR = 3  # 3.3: an AQL doorbell's packets are those its processor takes (FORMAT.md)

MAGIC = b"KFDTRACE"
FILE_HEADER = struct.Struct("<8sHHII")  # magic, major, minor, header length, crc32 of the header bytes
FRAME_MAGIC = b"KFRM"
# magic, kind, codec, u16 zero, stored length, raw length, count, first record, then the crc32 of the 28 bytes
# before it followed by the stored payload
FRAME = struct.Struct("<4sBBHIIIQI")
FOOTER_MAGIC = b"KFDTIDX\0"
FOOTER = struct.Struct("<8sQQI")  # magic, index frame offset, index frame length, crc32 of the 24 bytes before

RECORDS, BLOBS, INDEX = 1, 2, 3
KINDS = {RECORDS: "records", BLOBS: "blobs", INDEX: "index"}
ZSTD, STORED = 0, 1  # payload codecs
STORE_BELOW = 64  # payloads this small are stored as they are (so are those zstd cannot shrink)

MAX_FRAME_BYTES = 64 << 20  # bound on a frame's raw and stored payload: the writer's, and readers' default
MAX_HEADER_BYTES = 16 << 20
KEY_BYTES = 16
BLOB_FRAMING = 32  # bound on the msgpack framing of a blob in a blobs frame: [key, data] and the array header
MAX_BLOB_BYTES = MAX_FRAME_BYTES - BLOB_FRAMING
MAX_RECORD_BYTES = MAX_FRAME_BYTES - 5  # room for the frame's array header
SUBMISSION_KEY = "kfdtrace.submission_type"  # header keys starting "kfdtrace." belong to the format
# the record field holding a clock: stored as the difference from the previous record's in the frame
CLOCK_KEY = "kfdtrace.clock_field"
# a bin field of submissions stored as the difference from the frame's previous one with the same key field
# and length (3.0)
DELTA_KEY, DELTA_BY_KEY = "kfdtrace.delta_field", "kfdtrace.delta_key"
DEFAULT_SUBMISSION = "doorbell"
MIN_FRAME_OBJECTS = 2 << 20  # containers and elements a frame's decoding may always make
STORED_BYTES_PER_OBJECT = 4  # and one more per this many stored bytes
PACK_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)  # what packing unstorable data raises
# Flushed records that no full frame holds yet wait in a journal: stored records frames written past the
# file's frames, at the first page boundary JOURNAL_GAP or more beyond them (further when a frame about to be
# written would reach it), and dropped once a frame holds them; close() leaves none. A reader recovering an
# unclosed file looks for the journal's first frame at page boundaries up to JOURNAL_REACH past its last frame.
JOURNAL_GAP = 64 << 10
JOURNAL_PAGE = 4096
JOURNAL_REACH = JOURNAL_GAP + MAX_FRAME_BYTES + 32 + 2 * JOURNAL_PAGE  # 32: a frame head
JOURNAL_CANDIDATES = 4


class TraceError(Exception):
    """A trace that cannot be read or written; the message is one line naming the file and what is wrong."""


class FrameError(TraceError):
    """A frame that is truncated or damaged: `offset` is where it starts, `reason` what is wrong with it."""

    def __init__(self, path: str, offset: int, reason: str):
        super().__init__(f"{path}: frame at byte {offset}: {reason}")
        self.offset, self.reason = offset, reason


class Record(NamedTuple):
    """One record: its number in the trace (from 0), its type and its fields."""

    n: int
    type: str
    fields: dict[str, Any]


class FrameInfo(NamedTuple):
    """One index entry. RECORDS frames: records first .. first+count-1, and the submissions among them
    (None when none); BLOBS frames: first is 0 and count the number of blobs."""

    offset: int
    kind: int
    first: int
    count: int
    counts: dict[str, int]
    first_submission: int | None
    last_submission: int | None


class FrameHead(NamedTuple):
    kind: int
    codec: int
    stored: int  # payload bytes in the file
    raw: int  # payload bytes once decompressed
    count: int
    first: int
    crc: int


def _sha256_key(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:KEY_BYTES]


# The blob key function of each major this reader reads (the one content hash of a file: blob keys, checkpoint
# chunk keys). Not cryptographic from 2.x on: keys find and deduplicate content, and with the frame CRCs catch
# corruption; nothing in a trace is trusted because its key matches.
KEY_FUNCTIONS: dict[int, Callable[[Any], bytes]] = {
    1: _sha256_key,  # the first 16 bytes of SHA-256
    2: xxhash.xxh3_128_digest,  # XXH3-128, its canonical (big-endian) 16 bytes: ~10x faster
    3: xxhash.xxh3_128_digest,
}
blob_key = KEY_FUNCTIONS[FORMAT_MAJOR]  # the key of `data` (bytes or any buffer) in the files this module writes


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _no_ext(code: int, data: bytes) -> None:
    raise ValueError(f"msgpack extension type {code} is not allowed in a trace")


def object_budget(stored: int) -> int:
    """How many objects decoding a payload stored in `stored` bytes may make."""
    return max(MIN_FRAME_OBJECTS, stored // STORED_BYTES_PER_OBJECT)


class _Budget:
    """Counts the objects msgpack makes (each container, and its elements), ValueError past the budget."""

    def __init__(self, budget: int):
        self.left = budget

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise ValueError("more objects than a frame of this stored size can hold")

    def list_hook(self, obj: list) -> list:
        self.spend(1 + len(obj))
        return obj

    def object_hook(self, obj: dict) -> dict:
        self.spend(1 + 2 * len(obj))
        return obj


def _unpack(raw: bytes, budget: int) -> Any:
    """Bounded msgpack decoding: no extension types (timestamps included), no length beyond the input's or the
    object budget, and at most `budget` objects made."""
    n = min(len(raw), budget)
    hooks = {}
    # Every object takes a byte of `raw` at least, so what _Budget counts (each container once more than its
    # elements, a map's keys and values each) is under 2 * len(raw): a payload that small needs no counting.
    if 2 * len(raw) > budget:
        count = _Budget(budget)
        hooks = {"list_hook": count.list_hook, "object_hook": count.object_hook}
    return msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=False, ext_hook=_no_ext, max_ext_len=0,
                           max_str_len=len(raw), max_bin_len=len(raw), max_array_len=n, max_map_len=n, **hooks)


# -- writing ----------------------------------------------------------------------------------------------
_Job = tuple[int, tuple[bytes | bytearray, ...], int, int]  # a frame to write: kind, raw payload in parts, count, first


class _Output:
    """The file a writer appends to, and the thread that compresses and writes its frames in order.

    A frame is either handed to the worker (`submit`: the recording thread goes on packing while zstd and
    write(2) run without the GIL) or written on the calling thread after the queued ones (`write`). A failed
    write cuts the file back to the frame boundary and keeps the frame and those after it queued: `error` is
    then set, the worker stops, and the next `drain` retries them on the calling thread. Frame offsets are
    known once written: `offsets[i]` is the i-th frame's. The worker is a daemon started with the first
    submitted frame, and holds no reference to the writer."""

    def __init__(self, path: str, fd: int, level: int):
        self.path, self.fd, self.offset = path, fd, 0
        self.offsets: list[int] = []
        self.error: TraceError | None = None  # why records are refused: a failed write, or the trace closed
        self.counts = Counter(frames=0, raw=0, stored=0)
        self._zstd = zstandard.ZstdCompressor(level=level)
        self._jobs: deque[_Job] = deque()  # submitted, not yet written
        self._taken = False  # the worker is writing jobs[0]
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.journal_at: int | None = None  # where the journal starts (None: no record waits in one)
        self.journal = bytearray()  # its frames as written: copied further on when a frame would reach it
        self.journal_end = 0  # the number of the record after its last

    def append(self, data: bytes) -> None:
        """Append all of `data`; on failure cut the file back to where it was (the journal, if any, stays: it
        lies beyond), so a later write (after space was freed, say) still leaves a readable file."""
        start, view = self.offset, memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            try:  # what part of it was written goes, and the next write goes where it was
                if self.journal_at is None:
                    os.ftruncate(self.fd, start)
                os.lseek(self.fd, start, os.SEEK_SET)
            except OSError:
                pass
            raise TraceError(f"{self.path}: write failed at byte {start}: {exc.strerror}") from None
        self.offset += len(data)

    def _put(self, data: bytes | bytearray, offset: int) -> None:
        """Write all of `data` at `offset` (the journal's writes: the file position stays at its end)."""
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self.fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as exc:
            raise TraceError(f"{self.path}: write failed at byte {offset}: {exc.strerror}") from None

    def journal_frame(self, parts: tuple[bytes | bytearray, ...], count: int, first: int) -> None:
        """Write records `first`..`first + count - 1` (packed, a frame's payload) as a stored frame at the
        journal's end, starting a journal past the frames if there is none."""
        payload = b"".join(parts)
        data = _framed(RECORDS, STORED, payload, len(payload), count, first)
        if self.journal_at is None:
            self.journal_at, self.journal = _page_after(self.offset + JOURNAL_GAP), bytearray()
        self._put(data, self.journal_at + len(self.journal))  # a torn one is where the journal ends
        self.journal += data
        self.journal_end = first + count

    def _clear_journal(self, n: int) -> None:
        """Before writing `n` bytes at the file's end: if they would reach the journal, copy it further on
        first, so that a write cut short leaves it whole somewhere."""
        if self.journal_at is not None and self.offset + n > self.journal_at:
            moved = _page_after(max(self.offset + n + JOURNAL_GAP, self.journal_at + len(self.journal)))
            self._put(self.journal, moved)
            self.journal_at = moved

    def _drop_journal(self) -> None:
        """The frames hold every record of the journal: cut it off."""
        self.journal_at, self.journal = None, bytearray()
        with contextlib.suppress(TraceError):  # left there, a reader sees it holds no record the frames do not
            self.cut()

    def cut(self) -> None:
        """Cut the file at the end of its frames (whatever a journal left past them goes)."""
        try:
            os.ftruncate(self.fd, self.offset)
        except OSError as exc:
            raise TraceError(f"{self.path}: cannot cut the file at byte {self.offset}: {exc.strerror}") from None

    def frame(self, kind: int, parts: tuple[bytes | bytearray, ...], count: int, first: int) -> int:
        """Write one frame (zstd, or stored when that is not smaller); returns its offset."""
        raw = b"".join(parts)
        payload, codec = (self._zstd.compress(raw), ZSTD) if len(raw) >= STORE_BELOW else (raw, STORED)
        if len(payload) >= len(raw):
            payload, codec = raw, STORED
        data = _framed(kind, codec, payload, len(raw), count, first)
        offset = self.offset
        self._clear_journal(len(data))
        self.append(data)
        if self.journal_at is not None and kind == RECORDS and first + count >= self.journal_end:
            self._drop_journal()
        n = self.counts
        n["frames"] += 1
        n["raw"] += len(raw)
        n["stored"] += len(payload)
        return offset

    def _job(self, job: _Job) -> TraceError | None:
        """Write a queued frame; the error if that failed."""
        try:
            self.offsets.append(self.frame(*job))
        except TraceError as exc:
            return exc
        except Exception as exc:  # the worker must not die with frames queued: whoever drains would wait forever
            return TraceError(f"{self.path}: cannot write a frame: {_one_line(exc)}")
        return None

    def _run(self) -> None:
        cond, jobs = self._cond, self._jobs
        while True:
            with cond:
                while not self._stopping and (not jobs or self.error is not None):
                    cond.wait()
                if not jobs or self.error is not None:
                    return
                self._taken = True
                cond.notify_all()
                job = jobs[0]
            error = self._job(job)
            with cond:
                self._taken = False
                if error is None:
                    jobs.popleft()
                else:
                    self.error = error
                cond.notify_all()

    def submit(self, job: _Job) -> None:
        """Queue a frame for the worker. If another was already waiting for it, wait until the worker takes
        that one: the worker then gets the GIL at once (rather than after the interpreter's switch interval),
        so one frame is compressed while the next is packed."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kfdtrace-writer", daemon=True)
                self._thread.start()
            self._jobs.append(job)  # first: an interrupted wait loses nothing
            self._cond.notify_all()
            while len(self._jobs) > self._taken + 1 and self.error is None:
                self._cond.wait()

    def wait(self) -> None:
        """Until every queued frame is written, or a write failed."""
        with self._cond:
            while self._jobs and self.error is None:
                self._cond.wait()

    def drain(self) -> None:
        """Every queued frame written when this returns: after a failure, the frames kept are retried on this
        thread (the worker waits meanwhile). Raises TraceError if a write fails again."""
        self.wait()
        if self.error is None:
            return
        jobs = self._jobs
        while jobs:
            error = self._job(jobs[0])
            if error is not None:
                self.error = error
                raise error
            jobs.popleft()
        with self._cond:
            self.error = None

    def write(self, job: _Job) -> None:
        """Write a frame now, on this thread, after the queued ones; if it fails it stays queued (see drain)."""
        self.drain()
        error = self._job(job)
        if error is not None:
            with self._cond:
                self._jobs.append(job)
                self.error = error
            raise error

    def stop(self) -> None:
        """Let the worker end once the queued frames are written (or a write failed)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def close(self, error: TraceError) -> None:
        """Stop and join the worker, close the file; `error` is what later calls raise."""
        self.stop()
        if self._thread is not None:
            self._thread.join()
        self.error = error
        os.close(self.fd)


class TraceWriter:
    """Streams records and blobs into frames. `flush()` makes everything so far survive a SIGKILL; `close()`
    adds the index and footer. Not thread-safe: callers sharing a writer hold a lock around it.

    Full frames are compressed and written by a background thread while the caller goes on recording; flush()
    and close() write on the caller's thread. When a write fails the file is cut back to the last whole frame,
    the frames not written are kept, and every call but flush() and close() raises TraceError until a flush()
    writes them (after space was freed, say): no record reported as recorded is lost from a file that closes."""

    def __init__(self, path: str, header: dict, *, level: int = 3, frame_bytes: int = 256 << 10,
                 submission_type: str = DEFAULT_SUBMISSION, clock: str | None = None,
                 delta: tuple[str, str] | None = None):
        """`clock`: the name of a record field holding a time that grows from record to record (int); it is
        stored as the difference from the previous record's in the frame, which compresses to a few bits.
        `delta`: (field, key) of submissions: a bin field stored as its difference from the same field of the
        frame's previous submission with the same `key` field (an int, or nil) and the same length (a queue's
        ring bytes: counters and addresses move a little from one submission to the next)."""
        if not 0 < frame_bytes <= MAX_RECORD_BYTES:
            raise ValueError(f"frame_bytes must be in 1..{MAX_RECORD_BYTES}, not {frame_bytes}")
        if not isinstance(header, dict) or not isinstance(submission_type, str):
            raise TypeError("header must be a dict and submission_type a str")
        if delta is not None and not (len(delta) == 2 and all(isinstance(x, str) for x in delta)
                                      and clock not in delta and delta[0] != delta[1]):
            raise ValueError(f"delta must be two different field names, neither the clock, not {delta!r}")
        self.path, self.frame_bytes, self.submission_type = path, frame_bytes, submission_type
        self._clock, self._clock_base = clock, 0  # the clock of the frame's last record that has one
        if clock is not None:
            header = {**header, CLOCK_KEY: clock}
        self._delta, self._delta_type = delta, submission_type if delta is not None else None
        self._delta_field, self._delta_key = delta or (None, None)
        self._chained: dict[Slot, int] = {}  # each slot's last value in the frame (delta)
        if delta is not None:
            header = {**header, DELTA_KEY: delta[0], DELTA_BY_KEY: delta[1]}
        import msgspec.msgpack  # the writer's alone: readers (`kfdtrace info`) start faster without it

        self._encoder = msgspec.msgpack.Encoder(enc_hook=_plain)
        self._encode_into = self._encoder.encode_into
        head = self._packed({**header, SUBMISSION_KEY: submission_type}, "the header")
        if len(head) > MAX_HEADER_BYTES:
            raise TraceError(f"{path}: a header of {len(head)} bytes exceeds {MAX_HEADER_BYTES} bytes")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise TraceError(f"{path}: cannot create: {exc.strerror}") from None
        self._out = _Output(path, fd, level)
        self._closed = False
        self._buf = bytearray()  # packed records of the pending frame
        self._types: list[str] = []  # and their types
        # of them, in the journal: (bytes, records, the clock base and the delta slots after them)
        self._journaled: tuple[int, int, int, dict[Slot, int]] = (0, 0, 0, {})
        self._first = 0  # number of the pending frame's first record
        self._blobs: list[list[bytes]] = []  # pending [key, data]
        self._blob_buf = 0  # their bytes, framing included
        self._keys: dict[bytes, tuple[int, int] | None] = {}  # key -> (frame number, position); None: pending
        self._frames: list[tuple] = []  # each frame's index entry but its offset (the output's offsets[i])
        self._counts: Counter[str] = Counter()  # records handed to frames, by type
        self._submissions = 0  # submissions handed to frames
        self._n = Counter(blobs=0, blob_bytes=0, dedup=0)
        try:
            self._out.append(FILE_HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(head), zlib.crc32(head)) + head)
        except BaseException:
            os.close(fd)
            raise
        weakref.finalize(self, self._out.stop).atexit = False  # a writer dropped unclosed ends its worker

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _packed(self, obj: Any, what: str) -> bytes:
        try:
            return self._encoder.encode(obj)
        except PACK_ERRORS as exc:
            raise TraceError(f"{self.path}: cannot store {what}: {_one_line(exc)}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise TraceError(f"{self.path}: the trace is closed")

    def _refuse(self) -> None:
        """Raise why nothing can be recorded now (the trace is closed, or a write failed), if so."""
        error = self._out.error
        if error is not None:
            raise TraceError(str(error))

    # records ------------------------------------------------------------------------------------------
    def record(self, type: str, /, **fields: Any) -> int:
        """Append a record of `type` (fields: plain msgpack data; a field may be called "type" too); returns
        its number."""
        return self.record_fields(type, fields)

    def record_fields(self, type: str, fields: dict[str, Any]) -> int:
        """record() with the fields in a dict: a caller that has the dict saves unpacking it into keyword
        arguments, which costs more than packing it. The record is packed before this returns; `fields` is as
        it was (the clock field is set to its difference while packing, then back)."""
        if self._out.error is not None:
            self._refuse()
        if type.__class__ is not str or not type:
            type = self._type_name(type)
        buf = self._buf
        start = len(buf)
        clock = self._clock
        t = fields.get(clock) if clock is not None else None
        if t.__class__ is not int:
            t = None
        found = delta_slot(fields, self._delta_field, self._delta_key) if type == self._delta_type else None
        try:
            if t is None and found is None:
                self._encode_into((type, fields), buf, -1)
            else:  # the stored values in place while packing, then back
                field = given = None
                if t is not None:
                    fields[clock] = t - self._clock_base  # type: ignore[index]
                if found is not None:
                    slot, data = found
                    value = int.from_bytes(data, "little")
                    before = self._chained.get(slot)
                    if before is not None:
                        field = self._delta_field
                        given, fields[field] = fields[field], ((value - before) % (1 << 8 * slot[1])).to_bytes(
                            slot[1], "little")
                try:
                    self._encode_into((type, fields), buf, -1)
                finally:
                    if t is not None:
                        fields[clock] = t  # type: ignore[index]
                    if field is not None:
                        fields[field] = given
                if t is not None:
                    self._clock_base = t
                if found is not None:
                    self._chained[slot] = value
        except PACK_ERRORS as exc:
            del buf[start:]  # what was packed of it
            raise TraceError(f"{self.path}: cannot store a {type!r} record: {_one_line(exc)}") from None
        types = self._types
        n = self._first + len(types)
        types.append(type)
        if len(buf) >= self.frame_bytes:
            self._frame_full(len(buf) - start)
        return n

    def _type_name(self, type: Any) -> str:
        """A record type given as something other than a plain non-empty str: as a plain str, or refused."""
        if not isinstance(type, str) or not type:
            raise TraceError(f"{self.path}: a record type must be a non-empty str, not {type!r}")
        return str(type)

    def _frame_full(self, last: int) -> None:
        """The pending frame reached frame_bytes with a record of `last` bytes: hand it to the output. If that
        record would make the frame too large, the records before it go in one frame and it goes in its own,
        or is refused (then the rest is kept)."""
        if len(self._buf) <= MAX_RECORD_BYTES:
            self._hand_over()
            return
        record, type = bytes(self._buf[-last:]), self._types.pop()
        del self._buf[-last:]
        base, chained = self._clock_base, self._chained
        self._hand_over()
        if last > MAX_RECORD_BYTES:
            raise TraceError(f"{self.path}: a {type!r} record of {last} bytes exceeds the {MAX_FRAME_BYTES}-byte "
                             "frame limit")
        if self._clock is not None or self._delta is not None:
            record = self._on_its_own(record, type, base, chained)
        self._buf += record
        self._types.append(type)
        self._hand_over()

    # blobs --------------------------------------------------------------------------------------------
    def blob(self, data: bytes, key: bytes | None = None) -> bytes:
        """Store `data` once per file; returns its key. Pass `key` (= blob_key(data)) if already computed."""
        self._refuse()
        if key is not None and (not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES):
            raise TraceError(f"{self.path}: a blob key is {KEY_BYTES} bytes, not {_what(key)}")
        key = blob_key(data) if key is None else bytes(key)
        if key in self._keys:
            self._n["dedup"] += 1
            return key
        size = len(data)
        if size > MAX_BLOB_BYTES:
            raise TraceError(f"{self.path}: a blob of {size} bytes exceeds the {MAX_BLOB_BYTES}-byte frame limit "
                             "(store memory in chunks)")
        if self._blobs and self._blob_buf + size + BLOB_FRAMING > self.frame_bytes:
            self._out.submit(self._blobs_frame())
        self._keys[key] = None
        self._blobs.append([key, bytes(data)])
        self._blob_buf += size + BLOB_FRAMING  # so that no blobs frame exceeds MAX_FRAME_BYTES
        self._n["blobs"] += 1
        self._n["blob_bytes"] += size
        if self._blob_buf >= self.frame_bytes:
            self._out.submit(self._blobs_frame())
        return key

    # frames -------------------------------------------------------------------------------------------
    def _on_its_own(self, record: bytes, type: str, base: int, chained: dict[Slot, int]) -> bytes:
        """The packed last record of a frame, as the first of a frame of its own: its clock and delta field
        hold their values, not differences (`base` and `chained` are its frame's after it)."""
        _, fields = msgpack.unpackb(record, raw=False, strict_map_key=False)
        if self._clock is not None and fields.get(self._clock).__class__ is int:
            fields[self._clock] = base  # it set the base when it was packed
        found = delta_slot(fields, self._delta_field, self._delta_key) if type == self._delta_type else None
        if found is not None:
            slot = found[0]
            fields[self._delta_field] = chained[slot].to_bytes(slot[1], "little")
        return self._encoder.encode((type, fields))

    def _blobs_frame(self) -> _Job:
        """The pending blobs as a frame to write (they are no longer pending)."""
        blobs, number = self._blobs, len(self._frames)
        for i, (key, _) in enumerate(blobs):
            self._keys[key] = (number, i)
        self._frames.append((BLOBS, 0, len(blobs), {}, None, None))
        self._blobs, self._blob_buf = [], 0
        return BLOBS, (self._packed(blobs, "blobs"),), len(blobs), 0

    def _records_frame(self) -> _Job:
        """The pending records as a frame to write (they are no longer pending)."""
        count, first = len(self._types), self._first
        counts = Counter(self._types)
        subs = counts.get(self.submission_type, 0)
        span = (self._submissions, self._submissions + subs - 1) if subs else (None, None)
        self._frames.append((RECORDS, first, count, dict(counts), *span))
        self._counts.update(counts)
        self._submissions += subs
        self._first += count
        job = RECORDS, (_array_header(count), self._buf), count, first
        self._buf, self._types, self._journaled = bytearray(), [], (0, 0, 0, {})
        self._clock_base, self._chained = 0, {}
        return job

    def _journal(self) -> None:
        """Write the pending records not yet in the journal to it, as a frame of their own: its first record
        with a clock, and its first submission of each delta slot, get their values, as a frame's first do,
        not their differences from the ones before."""
        at, n, base, chained = self._journaled
        packed = self._buf[at:]
        if base or chained:
            packed = self._rebased(packed, base, chained)
        count = len(self._types) - n
        self._out.journal_frame((_array_header(count), packed), count, self._first + n)
        self._journaled = (len(self._buf), len(self._types), self._clock_base, dict(self._chained))

    def _rebased(self, packed: bytes | bytearray, base: int, chained: dict[Slot, int]) -> bytes | bytearray:
        """`packed` records with `base` added to the first clock among them, and each slot's value in
        `chained` to the first delta field of that slot among them. Only those records are packed again: the
        rest are copied, and reading stops once every value is placed (a flush's journal pays for a few
        records, not for all those since the last)."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(packed)
        parts: list[bytes | bytearray] = []
        start = kept = 0  # where the record read starts; bytes [kept, start) are copied as they are
        seen: set[Slot] = set()
        for type_, fields in unpacker:
            end, changed = unpacker.tell(), False
            if base and fields.get(self._clock).__class__ is int:
                fields[self._clock] += base
                base, changed = 0, True
            found = delta_slot(fields, self._delta_field, self._delta_key) if chained and type_ == self._delta_type \
                else None
            if found is not None and found[0] not in seen:
                slot, data = found
                seen.add(slot)
                if slot in chained:
                    fields[self._delta_field] = _undone(data, chained[slot]).to_bytes(slot[1], "little")
                    changed = True
            if changed:
                parts += (packed[kept:start], self._encoder.encode((type_, fields)))
                kept = end
            start = end
            if not base and seen >= chained.keys():
                break
        parts.append(packed[kept:])
        return b"".join(parts)

    def _hand_over(self) -> None:
        """Hand the pending blobs, then the pending records, to the background thread as frames."""
        if self._blobs:
            self._out.submit(self._blobs_frame())
        if self._types:
            self._out.submit(self._records_frame())

    def flush(self) -> None:
        """Write what is buffered now, after the frames handed to the background thread: the blobs as a frame,
        then the records no frame holds yet to the journal (the pending frame goes on filling, so flushing
        often costs no frames). When this returns they are in the kernel: a SIGKILL loses none of them (a power
        cut may). After a failed write, this is what tries again."""
        self._check_open()
        self._out.drain()
        if self._blobs:
            self._out.write(self._blobs_frame())
        if len(self._types) > self._journaled[1]:
            self._journal()

    def write_frames(self) -> None:
        """Write every buffered blob and record as frames now (the journal goes with them): before taking
        `stats` for a summary, so that they count every frame but the index."""
        self._check_open()
        self._out.drain()
        if self._blobs:
            self._out.write(self._blobs_frame())
        if self._types:
            self._out.write(self._records_frame())

    def flush_blobs(self, at_least: int = 0) -> None:
        """Hand the buffered blobs to the background thread as a frame now if they hold `at_least` bytes
        (records stay buffered): for a caller about to block, whose wait hides the compression and the write."""
        self._refuse()
        if self._blobs and self._blob_buf >= at_least:
            self._out.submit(self._blobs_frame())

    def close(self, summary: dict | None = None) -> None:
        """Flush, then write the index (with `summary`) and the footer, and end the background thread. Closing
        again does nothing."""
        if self._closed:
            return
        self._packed(summary, "the summary")  # checked before anything is written: the caller may retry
        try:
            self.write_frames()
            out = self._out
            out.cut()  # the footer must end the file
            index = {"frames": [[out.offsets[i], *entry] for i, entry in enumerate(self._frames)],
                     "records": self._first, "submissions": self._submissions,
                     "submission_type": self.submission_type, "counts": dict(self._counts),
                     "blobs": {key: (out.offsets[frame], i) for key, (frame, i) in self._keys.items()},
                     "summary": summary}
            offset = out.frame(INDEX, (self._packed(index, "the index"),), 0, 0)
            body = FOOTER_MAGIC + struct.pack("<QQ", offset, out.offset - offset)
            out.append(body + struct.pack("<I", zlib.crc32(body)))
        finally:
            self._closed = True
            self._out.close(TraceError(f"{self.path}: the trace is closed"))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> dict[str, int]:
        """Counts so far (once the frames handed to the background thread are written); raw_bytes and
        compressed_bytes are payload bytes of the frames written, before and after compression."""
        self._out.wait()
        n, out = self._n, self._out.counts
        return {"records": self._first + len(self._types),
                "submissions": self._submissions + self._types.count(self.submission_type),
                "frames": out["frames"], "raw_bytes": out["raw"], "compressed_bytes": out["stored"],
                "blobs": n["blobs"], "blob_bytes": n["blob_bytes"], "dedup_hits": n["dedup"],
                "file_bytes": self._out.offset}


# -- reading ----------------------------------------------------------------------------------------------
READS_OF_A_MOVING_TRACE = 3  # a damaged trace whose file changes while it is scanned is read again, this often
MOVED = "it changed while it was read (is its capture still writing it?): read it again once the capture has ended"


class TraceReader:
    """Reads a trace through its index, or through an index rebuilt by scanning when the trace was not closed
    (then `recovered` is True and `recovery_note` says what was found)."""

    def __init__(self, path: str, *, max_frame_bytes: int = MAX_FRAME_BYTES):
        self.path, self.max_frame_bytes = path, max_frame_bytes
        self._fd = self._open(path)
        self._cache: tuple[int, list] | None = None
        try:
            for _ in range(READS_OF_A_MOVING_TRACE):  # a capture still writing it may move what a scan found
                st = os.fstat(self._fd)
                self._size, self._stamp = st.st_size, (st.st_size, st.st_mtime_ns)
                self._read_header()
                self.recovered, self.recovery_note = False, ""
                self.damage: str | None = None  # why a recovered trace is corrupt (an index or a frame damaged)
                damage = self._read_index()
                if damage is not None:
                    self._scan(damage)
                if self.damage is None or not self._moved():
                    break
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def _open(path: str) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # opening a FIFO must not block
        except OSError as exc:
            raise TraceError(f"{path}: cannot open: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise TraceError(f"{path}: not a regular file")
        return fd

    def _fail(self, message: str) -> TraceError:
        return TraceError(f"{self.path}: {message}")

    def _read_at(self, offset: int, n: int) -> bytes:
        if self._fd < 0:
            raise self._fail("the trace is closed")
        try:
            data = os.pread(self._fd, n, offset)
            while len(data) < n:
                more = os.pread(self._fd, n - len(data), offset + len(data))
                if not more:
                    raise self._fail(f"truncated at byte {offset + len(data)} (did the file shrink?)")
                data += more
        except OSError as exc:
            raise self._fail(f"read failed at byte {offset}: {exc.strerror}") from None
        return data

    def _decode(self, raw: bytes, stored: int, offset: int | None = None) -> Any:
        """msgpack from the frame at `offset` (None: the file header), whose payload was `stored` bytes."""
        try:
            return _unpack(raw, object_budget(stored))
        except Exception as exc:  # msgpack raises several types on malformed input
            why = "msgpack extension type (not allowed)" if "max_ext_len" in str(exc) else _one_line(exc)
            if offset is None:
                raise self._fail(f"header: malformed msgpack: {why} (corrupt trace)") from None
            raise FrameError(self.path, offset, f"malformed msgpack: {why} (corrupt trace)") from None

    # header, index, footer ----------------------------------------------------------------------------
    def _read_header(self) -> None:
        if self._size < FILE_HEADER.size:
            raise self._fail("not a kfdtrace file (too short)" if self._size else "empty file, not a kfdtrace trace")
        magic, major, minor, length, crc = FILE_HEADER.unpack(self._read_at(0, FILE_HEADER.size))
        if magic != MAGIC:
            raise self._fail("not a kfdtrace file (bad magic)")
        if major not in KEY_FUNCTIONS:
            *older, newest = (f"{m}.x" for m in KEY_FUNCTIONS)
            readable = f"{', '.join(older)} and {newest}"
            advice = ": upgrade kfdtrace" if major > FORMAT_MAJOR else ""
            raise self._fail(f"is trace format {major}.{minor}; this kfdtrace reads formats {readable}{advice}")
        if length > min(MAX_HEADER_BYTES, self._size - FILE_HEADER.size):
            raise self._fail(f"a header of {length} bytes does not fit (truncated or corrupt trace)")
        raw = self._read_at(FILE_HEADER.size, length)
        if zlib.crc32(raw) != crc:
            raise self._fail("header checksum mismatch (corrupt trace)")
        header = self._decode(raw, len(raw))
        if not isinstance(header, dict):
            raise self._fail("the header is not a map (corrupt trace)")
        submission_type = header.pop(SUBMISSION_KEY, DEFAULT_SUBMISSION)
        if not isinstance(submission_type, str):
            raise self._fail("the header's submission type is not a str (corrupt trace)")
        clock = header.pop(CLOCK_KEY, None)
        if clock is not None and not isinstance(clock, str):
            raise self._fail("the header's clock field is not a str (corrupt trace)")
        self.clock: str | None = clock  # the record field stored as differences (None: no such field)
        delta = header.pop(DELTA_KEY, None), header.pop(DELTA_BY_KEY, None)
        if delta != (None, None) and (major < 3 or not all(isinstance(x, str) for x in delta)):
            raise self._fail("the header's delta field is not two strs of format 3.x (corrupt trace)")
        self.delta: tuple[str, str] | None = delta if delta != (None, None) else None  # type: ignore[assignment]
        self.version: tuple[int, int] = (major, minor)
        self.blob_key: Callable[[Any], bytes] = KEY_FUNCTIONS[major]  # this file's: check blobs and checkpoints with it
        self.header: dict = header
        self.submission_type: str = submission_type
        self._data_start = FILE_HEADER.size + length

    def _read_index(self) -> str | None:
        """Load the index the footer points at: None, or why the frames must be scanned instead ("" when the
        trace has no footer)."""
        if self._size < self._data_start + FRAME.size + FOOTER.size:
            return ""
        footer = self._read_at(self._size - FOOTER.size, FOOTER.size)
        magic, offset, length, crc = FOOTER.unpack(footer)
        if magic != FOOTER_MAGIC or zlib.crc32(footer[:-4]) != crc:
            return ""
        if offset < self._data_start or offset + length != self._size - FOOTER.size:
            return "the footer points outside the frames"
        try:
            head = self._frame_head(offset)
            if head.kind != INDEX:
                return "the footer does not point at an index frame"
            self._load_index(self._decode(self._payload(offset, head), head.stored, offset), offset)
        except TraceError as exc:
            return str(exc).removeprefix(f"{self.path}: ")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return f"malformed index: {_one_line(exc)}"
        return None

    def _load_index(self, index: dict, end: int) -> None:
        """Take the index's tables, checking their types and that the frames follow each other (raises
        KeyError, TypeError or ValueError)."""
        frames, records, subs, totals, after = [], 0, 0, Counter(), self._data_start - 1
        for entry in index["frames"]:
            offset, kind, first, count, counts, lo, hi = entry[:7]  # a newer minor may add more
            frame = FrameInfo(_uint(offset), _uint(kind), _uint(first), _uint(count), _counts(counts), _opt(lo),
                              _opt(hi))
            if not after < offset < end:  # each frame once, in file order
                raise ValueError(f"a frame entry at byte {offset} is outside the frames, or out of order")
            after = offset
            if kind == RECORDS:
                n = frame.counts.get(self.submission_type, 0)
                if first != records or (lo, hi) != ((subs, subs + n - 1) if n else (None, None)):
                    raise ValueError(f"the frame entry at byte {offset} does not follow the one before")
                records, subs = records + count, subs + n
                totals.update(frame.counts)
            frames.append(frame)
        # the last frame listed ends where the index begins: an index leaving out the frames after it would make
        # every tool read a shorter trace (campaign 96; `verify` checks that each frame ends where the next begins).
        # A damaged head there is left for the read of that frame to name.
        reach = self._data_start
        if frames:
            try:
                head = self._frame_head(frames[-1].offset)
                self._stored(frames[-1].offset, head)
                reach = frames[-1].offset + FRAME.size + head.stored
            except FrameError:
                reach = end
        if frames and frames[0].offset != self._data_start or reach != end:
            raise ValueError("the frames it lists do not run up to it")
        blob_frames = {f.offset: f.count for f in frames if f.kind == BLOBS}
        blobs = {}
        for key, where in index["blobs"].items():
            if where is not None:
                offset, position = where
                if type(key) is not bytes or len(key) != KEY_BYTES or _uint(position) >= blob_frames.get(offset, 0):
                    raise ValueError("a blob entry is not a key in a blobs frame the index lists")
                blobs[key] = (_uint(offset), position)
        summary = index.get("summary")
        if summary is not None and not isinstance(summary, dict):
            raise TypeError("the summary is not a map")
        if (index["records"], index["submissions"]) != (records, subs) or _counts(index["counts"]) != totals:
            raise ValueError("the record, submission or type totals differ from the frames'")
        self.frames, self._blobs, self.summary = frames, blobs, summary
        self.record_count, self.submissions, self.counts = records, subs, _counts(index["counts"])
        self._index_submissions()

    def _index_submissions(self) -> None:
        self._sub_frames = [f for f in self.frames if f.kind == RECORDS and f.first_submission is not None]
        self._sub_starts = [f.first_submission for f in self._sub_frames]

    def _scan(self, damage: str) -> None:
        """Rebuild the index from the frames, up to the first one that is truncated or damaged."""
        self.frames, self._blobs, self.summary = [], {}, None
        totals: Counter[str] = Counter()
        offset, records, subs, why = self._data_start, 0, 0, "end of file"
        journal = None  # where the journal was found
        while offset < self._size:
            try:
                head = self._frame_head(offset)
                raw = self._payload(offset, head)
                if head.kind == INDEX:
                    why = "an index frame without a valid footer"
                    self.summary = self._scanned_summary(raw, head.stored)
                    break
                if head.kind == RECORDS and head.first != records:
                    raise FrameError(self.path, offset, f"starts at record {head.first}, not {records} "
                                                        "(corrupt trace)")
                entry = self._scanned_entry(offset, head, raw, subs)
            except TraceError as exc:
                why = exc.reason if isinstance(exc, FrameError) else str(exc).removeprefix(f"{self.path}: ")
                found = None if journal is not None else self._find_journal(offset, records)
                if found is None:
                    break
                offset = journal = found  # the flushed records no frame held yet
                why = "end of file"
                continue
            if entry is not None:
                self.frames.append(entry)
                if entry.kind == RECORDS:
                    records += entry.count
                    subs += entry.counts.get(self.submission_type, 0)
                    totals.update(entry.counts)
            offset += FRAME.size + head.stored
        self.record_count, self.submissions, self.counts = records, subs, dict(totals)
        self._index_submissions()
        self.recovered = True
        # not what a kill leaves: past the journal a kill may leave anything (zeros before a torn copy of it, moved
        # further on by _clear_journal)
        if journal is None and not why.startswith(("end of file", "truncated frame", "an index frame")):
            self.damage = f"frame at byte {offset}: {why}"
        elif damage:
            self.damage = f"trace index unusable ({damage})"
        frames = sum(1 for f in self.frames if f.kind == RECORDS)
        state = f"trace index unusable ({damage})" if damage else "trace was not closed"
        self.recovery_note = (f"{state}: recovered {records} records in {frames} frames and {len(self._blobs)} "
                              f"blobs{f' (the last from the journal at byte {journal})' if journal else ''}, "
                              f"stopped at byte {offset} ({why})")

    def _find_journal(self, offset: int, records: int) -> int | None:
        """Where the journal of a file whose frames stop at `offset` after `records` records starts: the first
        page boundary within JOURNAL_REACH holding a whole stored records frame that starts at record `records`.
        Of the heads that look right, at most JOURNAL_CANDIDATES have their payload read (a writer leaves two at
        most: a journal and its copy), so a file full of such heads costs no more than a few frames."""
        start, tried = _page_after(offset), 0
        for at in range(start, min(self._size - FRAME.size, offset + JOURNAL_REACH) + 1, JOURNAL_PAGE):
            magic, kind, codec, zero, _, _, _, first, _ = FRAME.unpack(self._read_at(at, FRAME.size))
            if magic != FRAME_MAGIC or kind != RECORDS or codec != STORED or zero or first != records:
                continue
            tried += 1
            try:
                self._payload(at, self._frame_head(at))
            except TraceError:
                if tried == JOURNAL_CANDIDATES:
                    return None
                continue
            return at
        return None

    def _scanned_entry(self, offset: int, head: FrameHead, raw: bytes, subs: int) -> FrameInfo | None:
        """The index entry of a frame found by scanning (None for kinds this reader does not know)."""
        if head.kind == BLOBS:
            for i, (key, _) in enumerate(self._blob_list(raw, offset, head)):
                self._blobs.setdefault(key, (offset, i))
            return FrameInfo(offset, BLOBS, 0, head.count, {}, None, None)
        if head.kind != RECORDS:
            return None
        counts = dict(Counter(t for t, _ in self._record_list(raw, offset, head)))
        n = counts.get(self.submission_type, 0)
        span = (subs, subs + n - 1) if n else (None, None)
        return FrameInfo(offset, RECORDS, head.first, head.count, counts, *span)

    def _scanned_summary(self, raw: bytes, stored: int) -> dict | None:
        """The summary in an index frame found by scanning (the writer was killed writing the footer)."""
        try:
            summary = self._decode(raw, stored, 0).get("summary")
        except (TraceError, AttributeError):
            return None
        return summary if isinstance(summary, dict) else None

    # frames -------------------------------------------------------------------------------------------
    def _frame_head(self, offset: int) -> FrameHead:
        """The head of the frame at `offset`, its fields in bounds and the frame within the file (the CRC is
        checked with the payload)."""
        if offset + FRAME.size > self._size:
            raise FrameError(self.path, offset, "truncated frame (head)")
        magic, kind, codec, zero, *sizes = FRAME.unpack(self._read_at(offset, FRAME.size))
        head = FrameHead(kind, codec, *sizes)
        if magic != FRAME_MAGIC or zero:
            raise FrameError(self.path, offset, "no frame here (corrupt trace)")
        if kind not in KINDS and self.version[1] <= FORMAT_MINOR:  # a newer minor may add kinds
            raise FrameError(self.path, offset, f"unknown frame kind {kind} (corrupt trace)")
        if codec not in (ZSTD, STORED):
            raise FrameError(self.path, offset, f"unknown codec {codec} (corrupt trace)")
        if max(head.stored, head.raw) > self.max_frame_bytes:
            raise FrameError(self.path, offset, f"declares {max(head.stored, head.raw)} bytes, over the "
                                                f"{self.max_frame_bytes}-byte frame limit (corrupt trace)")
        if (codec == STORED and head.stored != head.raw) or (kind in (BLOBS, INDEX) and head.first):
            raise FrameError(self.path, offset, "inconsistent frame head (corrupt trace)")
        if offset + FRAME.size + head.stored > self._size:
            have = self._size - offset - FRAME.size
            raise FrameError(self.path, offset, f"truncated frame ({have} of {head.stored} bytes)")
        return head

    def _stored(self, offset: int, head: FrameHead) -> bytes:
        """The frame's payload as stored, CRC verified."""
        data = self._read_at(offset, FRAME.size + head.stored)
        stored = data[FRAME.size:]
        if zlib.crc32(stored, zlib.crc32(data[:FRAME.size - 4])) != head.crc:
            raise FrameError(self.path, offset, "checksum mismatch (corrupt trace)")
        return stored

    def _payload(self, offset: int, head: FrameHead) -> bytes:
        """The frame's raw payload: CRC verified, decompressed into at most the declared size."""
        stored = self._stored(offset, head)
        if head.codec == STORED:
            return stored
        try:
            declared = zstandard.frame_content_size(stored)
            if declared not in (-1, head.raw):  # zstd would allocate what its own header says
                raise FrameError(self.path, offset, f"zstd frame declares {declared} bytes, frame head {head.raw} "
                                                    "(corrupt trace)")
            raw = zstandard.ZstdDecompressor().decompress(stored, max_output_size=head.raw, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise FrameError(self.path, offset, f"cannot decompress: {_one_line(exc)} (corrupt trace)") from None
        if len(raw) != head.raw:
            raise FrameError(self.path, offset, f"decompressed to {len(raw)} bytes, not {head.raw} (corrupt trace)")
        return raw

    def _record_list(self, raw: bytes, offset: int, head: FrameHead) -> list:
        payload = self._decode(raw, head.stored, offset)
        if type(payload) is not list or len(payload) != head.count:
            raise FrameError(self.path, offset, "the records do not match the frame head (corrupt trace)")
        clock, t = self.clock, 0  # a clock is stored as the difference from the frame's record before
        delta, submission, chained = self.delta, self.submission_type, {}
        for r in payload:
            if not (type(r) is list and len(r) == 2 and type(r[0]) is str and type(r[1]) is dict):
                raise FrameError(self.path, offset, "a record is not [type, fields] (corrupt trace)")
            if clock is not None:
                fields = r[1]
                step = fields.get(clock)
                if type(step) is int:
                    t = fields[clock] = t + step
            if delta is not None and r[0] == submission and (found := delta_slot(r[1], *delta)) is not None:
                slot, data = found
                before = chained.get(slot)
                value = int.from_bytes(data, "little") if before is None else _undone(data, before)
                if before is not None:
                    r[1][delta[0]] = value.to_bytes(slot[1], "little")
                chained[slot] = value
        return payload

    def _blob_list(self, raw: bytes, offset: int, head: FrameHead) -> list:
        payload = self._decode(raw, head.stored, offset)
        if type(payload) is not list or len(payload) != head.count:
            raise FrameError(self.path, offset, "the blobs do not match the frame head (corrupt trace)")
        for b in payload:
            if not (type(b) is list and len(b) == 2 and type(b[0]) is bytes and len(b[0]) == KEY_BYTES
                    and type(b[1]) is bytes):
                raise FrameError(self.path, offset, "a blob is not [key, data] (corrupt trace)")
        return payload

    def _frame(self, entry: FrameInfo) -> tuple[FrameHead, bytes]:
        """Head and raw payload of an indexed frame, the head checked against the index entry."""
        with self._unless_moved():
            head = self._frame_head(entry.offset)
            if (head.kind, head.count, head.first) != (entry.kind, entry.count, entry.first):
                raise FrameError(self.path, entry.offset, "the frame does not match the index (corrupt trace)")
            return head, self._payload(entry.offset, head)

    @contextlib.contextmanager
    def _unless_moved(self) -> Iterator[None]:
        """A frame of a recovered trace that no longer reads as it did, in a file that changed since it was opened,
        is said to have moved, not to be corrupt: a capture still writing the trace moves its journal on and
        writes frames where it was (campaign 101)."""
        try:
            yield
        except TraceError:
            if self.recovered and self._moved():
                raise self._fail(MOVED) from None
            raise

    def _moved(self) -> bool:
        """Whether the file changed since this reader last took its size (to read it from the start)."""
        st = os.fstat(self._fd) if self._fd >= 0 else None
        return st is not None and (st.st_size, st.st_mtime_ns) != self._stamp

    # public reading -----------------------------------------------------------------------------------
    def records(self, types: Iterable[str] | None = None, start: int = 0) -> Iterator[Record]:
        """Records numbered `start` on (only those of `types`, if given), one frame in memory at a time;
        frames before `start` or without a wanted type, as the index counts them, are skipped unread. Each
        frame read is checked against the index's counts of it (FrameError): reading every frame (`types`
        None) is what no index can hide records from."""
        wanted = None if types is None else frozenset(types)
        for entry in self.frames:
            if entry.kind != RECORDS or entry.first + entry.count <= start:
                continue
            if wanted is not None and wanted.isdisjoint(entry.counts):
                continue
            head, raw = self._frame(entry)
            first = entry.first
            records = self._record_list(raw, entry.offset, head)
            if Counter(t for t, _ in records) != Counter(entry.counts):
                raise FrameError(self.path, entry.offset, "record counts differ from the index (corrupt trace)")
            for i, (type_, fields) in enumerate(records):
                if (wanted is None or type_ in wanted) and first + i >= start:
                    yield Record(first + i, type_, fields)

    def records_from_submission(self, k: int, types: Iterable[str] | None = None) -> Iterator[Record]:
        """Records from the start of the frame holding submission `k` (from 0) on; none if there is no such
        submission."""
        if not 0 <= k < self.submissions:
            return iter(())
        entry = self._sub_frames[bisect.bisect_right(self._sub_starts, k) - 1]
        return self.records(types, entry.first)

    def has_blob(self, key: bytes) -> bool:
        """Whether the trace's index holds a blob under `key` (not read)."""
        return key in self._blobs

    def blob(self, key: bytes) -> bytes:
        """The data stored under `key`, checked against it (the last blob frame read stays decompressed)."""
        if type(key) is not bytes or len(key) != KEY_BYTES:
            raise self._fail(f"a blob key is {KEY_BYTES} bytes, not {_what(key)} (corrupt trace)")
        where = self._blobs.get(key)
        if where is None:
            raise self._fail(f"no blob {key.hex()} in this trace")
        offset, i = where
        if self._cache is None or self._cache[0] != offset:
            with self._unless_moved():
                head = self._frame_head(offset)
                if head.kind != BLOBS:
                    raise FrameError(self.path, offset, "the index points at a frame without blobs (corrupt trace)")
                self._cache = (offset, self._blob_list(self._payload(offset, head), offset, head))
        blobs = self._cache[1]
        if not 0 <= i < len(blobs) or blobs[i][0] != key:
            raise self._fail(f"blob {key.hex()}: the index points at the wrong place (corrupt trace)")
        data = blobs[i][1]
        if self.blob_key(data) != key:
            raise self._fail(f"blob {key.hex()} does not match its content (corrupt trace)")
        return data

    def stored_bytes(self, kind: int) -> int:
        """Bytes the payloads of the frames of `kind` (RECORDS, BLOBS) take in the file."""
        return sum(self._frame_head(e.offset).stored for e in self.frames if e.kind == kind)

    def verify(self) -> int:
        """Read and check every indexed frame: CRCs, sizes, structure, record counts against the index, blob
        contents against their keys; a recovered trace whose frames stop at a damaged one is corrupt, though
        it reads as far as it goes. Returns the number of frames checked."""
        if self.damage is not None:
            if self._moved():  # damage found in a file that is still changing, read over and over
                raise self._fail(MOVED)
            corrupt = "" if self.damage.endswith("(corrupt trace)") else " (corrupt trace)"
            raise self._fail(self.damage + corrupt)
        # where the next frame begins, and where each blob is: what an index says (a recovered trace's frames are
        # those found, the journal's past a gap: campaign 97)
        at, placed, indexed = self._data_start, {}, not self.recovered
        for entry in self.frames:
            head, raw = self._frame(entry)
            if indexed and entry.offset != at:
                raise FrameError(self.path, at, "a frame the index does not list (corrupt trace)")
            at += FRAME.size + head.stored
            if entry.kind == RECORDS:
                counts = Counter(t for t, _ in self._record_list(raw, entry.offset, head))
                if counts != Counter(entry.counts):
                    raise FrameError(self.path, entry.offset, "record counts differ from the index (corrupt trace)")
            elif entry.kind == BLOBS:
                for i, (key, data) in enumerate(self._blob_list(raw, entry.offset, head)):
                    if self.blob_key(data) != key:
                        raise FrameError(self.path, entry.offset, f"blob {key.hex()} does not match its content "
                                                                  "(corrupt trace)")
                    placed[key] = (entry.offset, i)
        if indexed and (wrong := next((key for key, where in self._blobs.items() if placed.get(key) != where), None)):
            raise self._fail(f"the index places blob {wrong.hex()} where it is not (corrupt trace)")
        return len(self.frames)


Slot = tuple[int | None, int]  # a delta field's chain in a frame: its key field's value and its length


def delta_slot(fields: dict, field: str, key: str) -> tuple[Slot, bytes] | None:
    """Where a submission's delta `field` chains, and its bytes; None when it is stored as it is: it is not a
    non-empty bin, or the `key` field is neither an int nor nil (FORMAT.md, Records)."""
    data = fields.get(field)
    if data.__class__ is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return None
        data = bytes(data)  # as packed: a bin
    by = fields.get(key)
    if by.__class__ is not int and by is not None:
        if not isinstance(by, int) or isinstance(by, bool):
            return None
        by = int(by)  # as packed
    return ((by, len(data)), data) if data else None


def _undone(stored: bytes, before: int) -> int:
    """A delta field's value: what is `stored` (its difference) plus the slot's value `before`, modulo 2^(8n)."""
    return (int.from_bytes(stored, "little") + before) % (1 << 8 * len(stored))


def _plain(obj: Any) -> Any:
    """What msgspec cannot pack as it is: subclasses of str, int, float and bytes, packed as their base type (as
    msgpack packs them)."""
    for plain in (str, int, float, bytes):
        if isinstance(obj, plain):
            return plain(obj)
    raise TypeError(f"cannot pack a {type(obj).__name__}")


def _framed(kind: int, codec: int, payload: bytes, raw: int, count: int, first: int) -> bytes:
    """A frame as written: its head, the CRC32 of the head and the payload, then the payload."""
    head = FRAME.pack(FRAME_MAGIC, kind, codec, 0, len(payload), raw, count, first, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _page_after(offset: int) -> int:
    """The first journal page boundary at or after `offset`."""
    return -(-offset // JOURNAL_PAGE) * JOURNAL_PAGE


def _array_header(n: int) -> bytes:
    """The msgpack header of an array of n elements: fixarray, array 16 or array 32."""
    if n < 16:
        return bytes([0x90 | n])
    return struct.pack(">BH", 0xDC, n) if n < 1 << 16 else struct.pack(">BI", 0xDD, n)


def _what(value: Any) -> str:
    """A short description of an untrusted value for an error message (never the whole of a big one)."""
    if isinstance(value, bytes | bytearray | str | list | dict):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"{type(value).__name__} {str(value)[:40]}"


def _uint(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise TypeError(f"{value!r} is not a count or an offset")
    return value


def _opt(value: Any) -> int | None:
    return None if value is None else _uint(value)


def _counts(obj: Any) -> dict[str, int]:
    if type(obj) is not dict or not all(type(k) is str and type(v) is int and v >= 0 for k, v in obj.items()):
        raise TypeError("record counts are not a map of str to count")
    return obj
