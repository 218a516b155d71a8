"""The kfdtrace file format: reader and writer in one module (layout in traces/FORMAT.md).

A file is a header, a stream of zstd-compressed msgpack frames (records, or content-addressed blobs), an
index frame and a footer. Frames are written whole with one write(2) each, so a process killed at any
moment leaves every frame it flushed readable; without a footer the reader rebuilds the index by scanning.

Traces are untrusted input: every length is checked against a bound before anything is allocated, every
frame carries a CRC32, msgpack extension types are refused, and nothing in a file is ever executed.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import zstandard

FORMAT_MAJOR, FORMAT_MINOR = 1, 0
MAGIC = b"KFDTRACE"
FILE_HEADER = struct.Struct("<8sHHII")  # magic, major, minor, header length, crc32 of the header bytes
# magic, kind, codec, 2 zero bytes, stored length, raw length, records, first record, then a crc32 of the 28
# bytes before it and the payload
FRAME = struct.Struct("<4sBBHIIIQI")
FRAME_MAGIC = b"KFRM"
FOOTER = struct.Struct("<8sQQI")  # magic, index frame offset, index frame length, crc32 of the 24 bytes before
FOOTER_MAGIC = b"KFDTIDX\0"
RECORDS, BLOBS, INDEX = 1, 2, 3
ZSTD, STORED = 0, 1  # frame codecs: frames under STORE_BELOW bytes are not worth compressing
STORE_BELOW = 2048
KINDS = {RECORDS: "records", BLOBS: "blobs", INDEX: "index"}
MAX_FRAME = 64 << 20  # bound on any frame's raw and compressed size, for writer and reader
MAX_HEADER = 16 << 20
KEY_BYTES = 16
SUBMISSION = "doorbell"  # the record type the index numbers submissions by


class TraceError(Exception):
    """A trace that cannot be read or written; the message is one line naming the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class Record:
    n: int
    type: str
    fields: dict[str, Any]


def blob_key(data: bytes) -> bytes:
    """The content key of a blob: sha256, first 16 bytes."""
    return hashlib.sha256(data).digest()[:KEY_BYTES]


def _no_ext(code: int, data: bytes) -> None:
    raise ValueError(f"msgpack extension type {code} is not allowed in a trace")


def _unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=_no_ext)  # raw is already bounded


# -- writing ----------------------------------------------------------------------------------------------
class TraceWriter:
    """Streams records and blobs into frames; `flush()` makes everything so far survive a SIGKILL."""

    def __init__(self, path: str, header: dict, *, level: int = 3, frame_bytes: int = 256 << 10):
        self.path, self.frame_bytes = path, frame_bytes
        self._zstd = zstandard.ZstdCompressor(level=level)
        self._packer = msgpack.Packer(use_bin_type=True)
        head = self._packer.pack(header)
        if len(head) > MAX_HEADER:
            raise TraceError(f"{path}: header of {len(head)} bytes is too large")
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self._offset = 0
        self._write(FILE_HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(head), zlib.crc32(head)) + head)
        self._records = bytearray()
        self._nrec = 0  # records in the pending frame
        self._first = 0  # number of the pending frame's first record
        self._counts: Counter[str] = Counter()
        self._subs: list[int] = []  # submission numbers in the pending frame
        self._blobs: list[tuple[bytes, bytes]] = []
        self._blob_bytes = 0
        self._keys: dict[bytes, tuple[int, int] | None] = {}  # key -> (frame offset, position); None: pending
        self._frames: list[list] = []
        self.totals: Counter[str] = Counter()
        self.submissions = 0
        self.closed = False
        self._stats = Counter(raw_bytes=0, compressed_bytes=0, frames=0, blobs=0, blob_bytes=0, dedup_hits=0)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._offset += len(data)

    def record(self, type_: str, **fields: Any) -> int:
        """Append a record; returns its number."""
        packed = self._packer.pack([type_, fields])
        if len(packed) > MAX_FRAME:
            raise TraceError(f"{self.path}: a {type_} record of {len(packed)} bytes exceeds {MAX_FRAME} bytes")
        if self._records and len(self._records) + len(packed) > self.frame_bytes:
            self.flush()
        n = self._first + self._nrec
        self._records += packed
        self._nrec += 1
        self._counts[type_] += 1
        if type_ == SUBMISSION:
            self._subs.append(self.submissions)
            self.submissions += 1
        return n

    def blob(self, data: bytes, key: bytes | None = None) -> bytes:
        """Store `data` once per file; returns its key (pass `key` when the caller already computed it)."""
        key = key or blob_key(data)
        if key in self._keys:
            self._stats["dedup_hits"] += 1
            return key
        if len(data) > MAX_FRAME - 1024:
            raise TraceError(f"{self.path}: a blob of {len(data)} bytes exceeds the {MAX_FRAME}-byte frame limit")
        if self._blobs and self._blob_bytes + len(data) > self.frame_bytes:
            self._flush_blobs()
        self._keys[key] = None
        self._blobs.append((key, bytes(data)))
        self._blob_bytes += len(data)
        self._stats["blobs"] += 1
        self._stats["blob_bytes"] += len(data)
        return key

    def _frame(self, kind: int, raw: bytes, nrec: int, first: int) -> int:
        codec = STORED if len(raw) < STORE_BELOW else ZSTD
        comp = raw if codec == STORED else self._zstd.compress(raw)
        offset = self._offset
        head = FRAME.pack(FRAME_MAGIC, kind, codec, 0, len(comp), len(raw), nrec, first, 0)[:-4]
        self._write(head + struct.pack("<I", zlib.crc32(comp, zlib.crc32(head))) + comp)
        self._stats["raw_bytes"] += len(raw)
        self._stats["compressed_bytes"] += len(comp)
        self._stats["frames"] += 1
        return offset

    def _flush_records(self) -> None:
        if not self._nrec:
            return
        raw = self._packer.pack_array_header(self._nrec) + bytes(self._records)
        offset = self._frame(RECORDS, raw, self._nrec, self._first)
        subs = (self._subs[0], self._subs[-1]) if self._subs else (None, None)
        self._frames.append([offset, RECORDS, self._first, self._nrec, dict(self._counts), *subs])
        self.totals.update(self._counts)
        self._first += self._nrec
        self._records, self._nrec, self._counts, self._subs = bytearray(), 0, Counter(), []

    def _flush_blobs(self) -> None:
        if not self._blobs:
            return
        offset = self._frame(BLOBS, self._packer.pack([[k, d] for k, d in self._blobs]), len(self._blobs), 0)
        for i, (key, _) in enumerate(self._blobs):
            self._keys[key] = (offset, i)
        self._frames.append([offset, BLOBS, 0, len(self._blobs), {}, None, None])
        self._blobs, self._blob_bytes = [], 0

    def flush(self) -> None:
        """Write what is buffered as whole frames now (blobs first, so every record's blobs precede it)."""
        self._flush_blobs()
        self._flush_records()

    def close(self, summary: dict | None = None) -> None:
        """Flush, then write the index and the footer."""
        if self.closed:
            return
        try:
            self.flush()
            index = {"frames": self._frames, "records": self._first, "submissions": self.submissions,
                     "counts": dict(self.totals), "blobs": self._keys, "summary": summary}
            offset = self._frame(INDEX, self._packer.pack(index), 0, 0)
            length = self._offset - offset
            body = FOOTER_MAGIC + struct.pack("<QQ", offset, length)
            self._write(body + struct.pack("<I", zlib.crc32(body)))
        finally:
            self.closed = True
            os.close(self._fd)

    @property
    def stats(self) -> dict[str, int]:
        pending = len(self._records)
        return {"records": self._first + self._nrec, "submissions": self.submissions,
                "frames": self._stats["frames"], "raw_bytes": self._stats["raw_bytes"] + pending,
                "compressed_bytes": self._stats["compressed_bytes"], "blobs": self._stats["blobs"],
                "blob_bytes": self._stats["blob_bytes"], "dedup_hits": self._stats["dedup_hits"],
                "file_bytes": self._offset}


# -- reading ----------------------------------------------------------------------------------------------
class TraceReader:
    """Random access through the index (rebuilt by scanning when the trace was not closed)."""

    def __init__(self, path: str, *, max_frame_bytes: int = MAX_FRAME):
        self.path, self.max_frame = path, max_frame_bytes
        try:
            self._f = open(path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise TraceError(f"{path}: {exc.strerror}") from None
        try:
            self._size = os.fstat(self._f.fileno()).st_size
            self._read_header()
            self.recovered, self.recovery_note = False, ""
            if not self._read_index():
                self._scan()
        except BaseException:
            self._f.close()
            raise
        self._cache: tuple[int, list] | None = None

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def _fail(self, message: str) -> TraceError:
        return TraceError(f"{self.path}: {message}")

    def _read_at(self, offset: int, n: int) -> bytes:
        self._f.seek(offset)
        data = self._f.read(n)
        if len(data) != n:
            raise self._fail(f"truncated at byte {offset + len(data)} (wanted {n} bytes at {offset})")
        return data

    def _read_header(self) -> None:
        if self._size < FILE_HEADER.size:
            raise self._fail("not a kfdtrace file (too short)" if self._size else "empty file")
        magic, major, minor, length, crc = FILE_HEADER.unpack(self._read_at(0, FILE_HEADER.size))
        if magic != MAGIC:
            raise self._fail("not a kfdtrace file (bad magic)")
        if major != FORMAT_MAJOR:
            raise self._fail(f"is trace format {major}.{minor}; this kfdtrace reads format {FORMAT_MAJOR}.x"
                             + (": upgrade kfdtrace" if major > FORMAT_MAJOR else ""))
        if length > min(MAX_HEADER, self._size):
            raise self._fail(f"header length {length} is impossible (corrupt trace)")
        raw = self._read_at(FILE_HEADER.size, length)
        if zlib.crc32(raw) != crc:
            raise self._fail("header checksum mismatch (corrupt trace)")
        header = self._decode(raw, "header")
        if not isinstance(header, dict):
            raise self._fail("header is not a map (corrupt trace)")
        self.version, self.header = (major, minor), header
        self._data_start = FILE_HEADER.size + length

    def _decode(self, raw: bytes, what: str) -> Any:
        try:
            return _unpack(raw)
        except Exception as exc:  # msgpack raises several types on malformed input
            raise self._fail(f"{what}: malformed msgpack ({exc})") from None

    def _frame_at(self, offset: int) -> tuple[int, int, int, int, bytes]:
        """(kind, records, first record, end offset, raw payload) of the frame at `offset`, fully checked."""
        if offset + FRAME.size > self._size:
            raise self._fail(f"frame at byte {offset}: truncated header")
        head = self._read_at(offset, FRAME.size)
        magic, kind, codec, zero, clen, rlen, nrec, first, crc = FRAME.unpack(head)
        if magic != FRAME_MAGIC or kind not in KINDS or codec not in (ZSTD, STORED) or zero:
            raise self._fail(f"frame at byte {offset}: bad frame header (corrupt trace)")
        if clen > self.max_frame or rlen > self.max_frame:
            raise self._fail(f"frame at byte {offset}: claims {max(clen, rlen)} bytes, over the {self.max_frame}"
                             f"-byte limit")
        end = offset + FRAME.size + clen
        if end > self._size:
            raise self._fail(f"frame at byte {offset}: truncated ({self._size - offset - FRAME.size} of {clen} bytes)")
        comp = self._read_at(offset + FRAME.size, clen)
        if zlib.crc32(comp, zlib.crc32(head[:-4])) != crc:
            raise self._fail(f"frame at byte {offset}: checksum mismatch (corrupt trace)")
        if codec == STORED:
            raw = comp
        else:
            try:
                raw = zstandard.ZstdDecompressor().decompress(comp, max_output_size=rlen)
            except zstandard.ZstdError as exc:
                raise self._fail(f"frame at byte {offset}: cannot decompress ({exc})") from None
        if len(raw) != rlen:
            raise self._fail(f"frame at byte {offset}: {len(raw)} bytes decompressed, {rlen} declared")
        return kind, nrec, first, end, raw

    def _read_index(self) -> bool:
        if self._size < self._data_start + FOOTER.size:
            return False
        magic, offset, length, crc = FOOTER.unpack(self._read_at(self._size - FOOTER.size, FOOTER.size))
        body = self._read_at(self._size - FOOTER.size, FOOTER.size - 4)
        if magic != FOOTER_MAGIC or zlib.crc32(body) != crc or offset + length != self._size - FOOTER.size:
            return False
        try:
            kind, _, _, _, raw = self._frame_at(offset)
        except TraceError:
            return False
        index = self._decode(raw, "index")
        try:
            self.frames = [list(f) for f in index["frames"]]
            self._blobs = {bytes(k): tuple(v) for k, v in index["blobs"].items() if v is not None}
            self.record_count, self.submissions = int(index["records"]), int(index["submissions"])
            self.counts, self.summary = dict(index["counts"]), index["summary"]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._fail("index is malformed (corrupt trace)") from None
        return kind == INDEX

    def _scan(self) -> None:
        """Rebuild the index from the frames, up to the first one that is truncated or damaged."""
        self.frames, self._blobs, self.counts, self.summary = [], {}, {}, None
        totals: Counter[str] = Counter()
        offset, records, subs, why = self._data_start, 0, 0, "end of file"
        while offset < self._size:
            try:
                kind, nrec, first, end, raw = self._frame_at(offset)
                if kind == INDEX:
                    why = "end of the records"
                    break
                payload = self._decode(raw, f"frame at byte {offset}")
                if kind == BLOBS:
                    for i, (key, _) in enumerate(self._blob_list(payload, offset)):
                        self._blobs[key] = (offset, i)
                    self.frames.append([offset, BLOBS, 0, nrec, {}, None, None])
                else:
                    counts = Counter(t for t, _ in self._record_list(payload, offset))
                    n_subs = counts.get(SUBMISSION, 0)
                    span = (subs, subs + n_subs - 1) if n_subs else (None, None)
                    self.frames.append([offset, RECORDS, records, len(payload), dict(counts), *span])
                    records, subs = records + len(payload), subs + n_subs
                    totals.update(counts)
            except TraceError as exc:
                why = str(exc).removeprefix(f"{self.path}: ")
                break
            offset = end
        self.record_count, self.submissions, self.counts = records, subs, dict(totals)
        self.recovered = True
        self.recovery_note = (f"trace was not closed: recovered {records} records in {len(self.frames)} frames, "
                              f"stopped at byte {offset} ({why})")

    def _record_list(self, payload: Any, offset: int) -> list:
        if not isinstance(payload, list) or not all(
                isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) and isinstance(r[1], dict)
                for r in payload):
            raise self._fail(f"frame at byte {offset}: records are malformed (corrupt trace)")
        return payload

    def _blob_list(self, payload: Any, offset: int) -> list:
        if not isinstance(payload, list) or not all(
                isinstance(b, list) and len(b) == 2 and isinstance(b[0], bytes) and isinstance(b[1], bytes)
                for b in payload):
            raise self._fail(f"frame at byte {offset}: blobs are malformed (corrupt trace)")
        return payload

    def records(self, types: set[str] | None = None, start: int = 0) -> Iterator[Record]:
        """Records in order, frame by frame; frames without a wanted type, or before `start`, are skipped."""
        for offset, kind, first, nrec, counts, *_ in self.frames:
            if kind != RECORDS or first + nrec <= start or (types is not None and not types & counts.keys()):
                continue
            _, _, _, _, raw = self._frame_at(offset)
            for i, (type_, fields) in enumerate(self._record_list(self._decode(raw, f"frame at byte {offset}"),
                                                                  offset)):
                n = first + i
                if n >= start and (types is None or type_ in types):
                    yield Record(n, type_, fields)

    def verify(self) -> int:
        """Read and check every frame (checksums, sizes, structure); the number of frames checked."""
        for offset, kind, *_ in self.frames:
            _, _, _, _, raw = self._frame_at(offset)
            payload = self._decode(raw, f"frame at byte {offset}")
            (self._record_list if kind == RECORDS else self._blob_list)(payload, offset)
        return len(self.frames)

    def records_from_submission(self, k: int, types: set[str] | None = None) -> Iterator[Record]:
        """Records from the frame holding submission `k` on."""
        for _, kind, first, _, _, lo, hi in self.frames:
            if kind == RECORDS and lo is not None and lo <= k <= hi:
                return self.records(types, first)
        return iter(())

    def blob(self, key: bytes) -> bytes:
        where = self._blobs.get(bytes(key))
        if where is None:
            raise self._fail(f"no blob {bytes(key).hex()} in this trace")
        offset, i = where
        if self._cache is None or self._cache[0] != offset:
            _, _, _, _, raw = self._frame_at(offset)
            self._cache = (offset, self._blob_list(self._decode(raw, f"frame at byte {offset}"), offset))
        blobs = self._cache[1]
        if not 0 <= i < len(blobs) or blobs[i][0] != bytes(key):
            raise self._fail(f"blob {bytes(key).hex()}: index points at the wrong place (corrupt trace)")
        return blobs[i][1]
