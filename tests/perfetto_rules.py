"""The rules of the Chrome trace-event format (JSON Object Format) that a timeline must keep for ui.perfetto.dev
and chrome://tracing to draw it as meant: `problems(doc)` lists every rule a document breaks.

Times (`ts`, `dur`: microseconds) are compared in whole nanoseconds, as Perfetto reads them (rounded), so a
slice ending where the next begins is not an overlap of a float's last bit."""

from __future__ import annotations

import math
from collections import defaultdict

PHASES = frozenset("BEXiIsftMCbenPONDc")  # the phases the format defines (instant "I" is the deprecated "i")
FLOW_PHASES = frozenset("stf")


def _number(v: object) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _event_problems(i: int, e: object) -> list[str]:
    if type(e) is not dict:
        return [f"event {i} is not an object"]
    out = []
    if e.get("ph") not in PHASES:
        out.append(f"event {i}: unknown phase {e.get('ph')!r}")
    for key in ("pid", "tid"):
        if type(e.get(key)) is not int:
            out.append(f"event {i}: {key} {e.get(key)!r} is not an int")
    if e.get("ph") != "M" and not _number(e.get("ts")):
        out.append(f"event {i}: ts {e.get('ts')!r} is not a number")
    if type(e.get("name")) is not str:
        out.append(f"event {i}: no name")
    if e.get("ph") == "X" and not (_number(e.get("dur")) and e["dur"] >= 0):
        out.append(f"event {i}: X with dur {e.get('dur')!r}")
    if e.get("ph") in FLOW_PHASES and e.get("id") is None:
        out.append(f"event {i}: a flow event without an id")
    return out


def _nesting_problems(track: tuple[int, int], spans: list[tuple[int, int]]) -> list[str]:
    """Slices on one track must nest: none may start inside another and end after it."""
    out, stack = [], []
    for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
        while stack and stack[-1] <= start:
            stack.pop()
        if stack and end > stack[-1]:
            out.append(f"track {track}: slice {start}..{end} overlaps one ending at {stack[-1]}")
        stack.append(end)
    return out


def _ns(us: float) -> int:
    return round(us * 1000)


def _inside(spans: list[tuple[int, int]], ts: int) -> bool:
    return any(start <= ts <= end for start, end in spans)


def problems(doc: object) -> list[str]:
    """Every rule `doc` breaks, one line each; [] when it keeps them all."""
    if type(doc) is not dict or type(doc.get("traceEvents")) is not list:
        return ["not an object with a traceEvents list"]
    out: list[str] = []
    if doc.get("displayTimeUnit") not in (None, "ms", "ns"):
        out.append(f"displayTimeUnit {doc['displayTimeUnit']!r} is neither ms nor ns")
    events = doc["traceEvents"]
    for i, e in enumerate(events):
        out += _event_problems(i, e)
    if out:
        return out
    last: dict[tuple[int, int], int] = {}
    spans: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    open_b: dict[tuple[int, int], list[int]] = defaultdict(list)
    flows: dict[object, list[dict]] = defaultdict(list)
    processes, threads, used = set(), set(), set()
    for i, e in enumerate(events):
        track, ph = (e["pid"], e["tid"]), e["ph"]
        if ph == "M":
            if e["name"] == "process_name":
                processes.add(e["pid"])
            elif e["name"] == "thread_name":
                threads.add(track)
            continue
        used.add(track)
        ts = _ns(e["ts"])
        if ts < last.get(track, -math.inf):
            out.append(f"event {i}: ts {e['ts']} before the previous event of track {track}")
        last[track] = ts
        if ph == "X":
            spans[track].append((ts, ts + _ns(e["dur"])))
        elif ph == "B":
            open_b[track].append(ts)
        elif ph == "E":
            if not open_b[track]:
                out.append(f"event {i}: E without a B on track {track}")
            else:
                spans[track].append((open_b[track].pop(), ts))
        elif ph in FLOW_PHASES:
            flows[e["id"]].append(e)
    out += [f"track {t}: {len(b)} B without an E" for t, b in open_b.items() if b]
    for track, s in spans.items():
        out += _nesting_problems(track, s)
    out += _flow_problems(flows, spans)
    out += [f"pid {p} has no process_name" for p in sorted({t[0] for t in used} - processes)]
    out += [f"track {t} has no thread_name" for t in sorted(used - threads)]
    return out


def _flow_problems(flows: dict[object, list[dict]], spans: dict[tuple[int, int], list[tuple[int, int]]]
                   ) -> list[str]:
    """Each flow id: one start, one finish (bound to its enclosing slice) no earlier, both inside a slice."""
    out = []
    for fid, es in flows.items():
        starts, finishes = [e for e in es if e["ph"] == "s"], [e for e in es if e["ph"] == "f"]
        if len(starts) != 1 or len(finishes) != 1:
            out.append(f"flow {fid}: {len(starts)} starts and {len(finishes)} finishes")
            continue
        s, f = starts[0], finishes[0]
        if _ns(s["ts"]) > _ns(f["ts"]):
            out.append(f"flow {fid}: starts at {s['ts']}, after it finishes at {f['ts']}")
        if f.get("bp") != "e":
            out.append(f"flow {fid}: its finish does not bind to its enclosing slice (bp 'e')")
        for e in (s, f):
            if not _inside(spans.get((e["pid"], e["tid"]), []), _ns(e["ts"])):
                out.append(f"flow {fid}: its {e['ph']} at {e['ts']} is in no slice of track {(e['pid'], e['tid'])}")
    return out
