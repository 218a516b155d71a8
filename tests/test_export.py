"""`kfdtrace export` (issue 12): JSON Lines as `dump --json` gives them, and a Chrome/Perfetto trace-event timeline
(a track per queue and per recording thread, flow arrows from each semaphore signal to the waits it satisfied)
that keeps the format's rules (tests/perfetto_rules.py); hostile traces give one line."""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys

import pytest
from click.testing import CliRunner

from kfdtrace.capture.submissions import Analyzer
from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.driver.sdma import DIALECTS as SDMA
from kfdtrace.traces import export
from kfdtrace.traces.export import export_jsonl, export_perfetto
from kfdtrace.traces.format import TraceReader, TraceWriter
from kfdtrace.traces.records import checked
from kfdtrace.traces.semaphores import semaphore_facts
from kfdtrace.traces.walk import DIALECTS

from .perfetto_rules import problems
from .test_dump import many_frames

HERE = os.path.dirname(__file__)
SAMPLES = sorted(glob.glob(os.path.join(HERE, "..", "traces", "samples", "*.kfdtrace")))
PING_PONG = next(p for p in SAMPLES if "ping_pong" in p)
STRESS = next(p for p in SAMPLES if "sdma_stress" in p)
PEER_RING = next(p for p in SAMPLES if "peer_ring" in p)
VECTOR_ADD = next(p for p in SAMPLES if "vector_add" in p)
# Regenerate after a deliberate change of the timeline (and read the diff):
#   kfdtrace export traces/samples/ping_pong-gfx1100.kfdtrace --perfetto tests/data/golden/ping_pong.perfetto.json
GOLDEN = os.path.join(HERE, "data", "golden", "ping_pong.perfetto.json")

# What the sample workloads (traces/samples/regenerate.py) imply, worked out from examples/*.py:
# queue tracks, thread tracks, and flow arrows (waits for a value above 0 that a recorded signal satisfied).
EXPECTED = {
    # the GPU waits on ping >= 1..16 (CPU signals), the CPU on pong >= 1..16 (GPU signals)
    PING_PONG: {"queues": ["queue 0 (responder) SDMA"], "flows": 32},
    # 16 rounds: B waits staged >= r (16), A drained >= r-2 (14 above 0), the CPU drained >= 4, 8, 12, 16 (4)
    STRESS: {"queues": ["queue 0 (producer) SDMA", "queue 1 (consumer) SDMA"], "flows": 34},
    # 6 hops: each waits hop >= step (5 above 0, signalled by the other GPU's queue), the CPU hop >= 6
    PEER_RING: {"queues": ["queue 0 (hop0) SDMA on GPU node 1", "queue 1 (hop1) SDMA on GPU node 2"], "flows": 6},
    # one dispatch, then a barrier whose completion signal the CPU's signal wait sees at 0
    VECTOR_ADD: {"queues": ["queue 0 (vector add) COMPUTE_AQL"], "flows": 1},
}


def run(*args: str):
    return CliRunner().invoke(kfdtrace_cli, list(args))


def timeline(path: str, tmp_path) -> tuple[dict, dict[str, int]]:
    out = str(tmp_path / "timeline.json")
    with TraceReader(path) as r:
        counts = export_perfetto(r, out)
    with open(out) as f:
        return json.load(f), counts


def named(doc: dict, what: str) -> dict[tuple[int, int], str]:
    return {(e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"] if e["name"] == what}


def of_phase(doc: dict, ph: str) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["ph"] == ph]


def implied_by_the_records(path: str) -> dict[str, int]:
    """What the trace's records imply, worked out apart from export: slices (submissions, packets, CPU waits and
    signals), instants, and flows (the waits for a value above 0 that some signal satisfied), the packets'
    signals and waits read by capture's submission analyser; and, for AQL signals, one flow from each packet that
    decrements a signal (since the CPU last set it) to each BARRIER_AND after it and each CPU wait that saw the
    signal at 0."""
    from kfdtrace.driver.aql import AQL, AmdSignal

    value = AmdSignal.value.offset
    decrements: dict[int, int] = {}  # AQL signal value address -> packets decrementing it
    aql_flows = 0
    analyzer, dialects = Analyzer(), {}
    signals: dict[int, list[tuple[int, int]]] = {}  # address -> [(value, record number)]
    gpu_waits, cpu_waits = [], []
    n = {"slices": 0, "instants": 0}
    with TraceReader(path) as r:
        for rec in checked(r.records()):
            f = rec.fields
            if rec.type == "queue":
                dialects[f["queue"]] = DIALECTS[f["dialect"]]
            elif rec.type == "doorbell":
                plan, _ = analyzer.analyse(dialects[f["queue"]], f["ring"], lambda addr, size: None)
                sigs, waits, *_ = plan.facts(f["ring"], 0)
                for _, addr, value in sigs:
                    signals.setdefault(addr, []).append((value, rec.n))
                gpu_waits += [(addr, value) for _, addr, value in waits if value]
                n["slices"] += 1 + sum(plan.packets.values())
                n["instants"] += 1
                for p in AQL.iter_packets(f["ring"]) if dialects[f["queue"]] is AQL else ():
                    aql_flows += sum(decrements.get(h + value, 0) for h in AQL.settled(p))
                    if AQL.completion(p):
                        decrements[AQL.completion(p) + value] = decrements.get(AQL.completion(p) + value, 0) + 1
            elif rec.type == "cpu_signal":
                signals.setdefault(f["addr"], []).append((f["value"], rec.n))
                decrements.pop(f["addr"], None)
                n["slices"] += 1
            elif rec.type == "signal_wait":
                n["slices"] += 1
                aql_flows += decrements.get(f["addr"], 0) if f["ok"] and f["seen"] <= 0 else 0
            elif rec.type in ("cpu_wait", "event_wait"):
                n["slices"] += 1
                if rec.type == "cpu_wait" and f["ok"] and f["value"]:
                    cpu_waits.append((f["addr"], f["value"], rec.n))
            elif rec.type in ("checkpoint", "event_set", "event_reset", "note"):
                n["instants"] += 1
    n["flows"] = sum(any(v >= want for v, _ in signals.get(addr, ())) for addr, want in gpu_waits) + \
        sum(any(v >= want and at < when for v, at in signals.get(addr, ())) for addr, want, when in cpu_waits) + \
        aql_flows
    return n


# -- the samples -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", SAMPLES, ids=os.path.basename)
def test_each_sample_exports_a_timeline_that_keeps_the_format_rules(path, tmp_path):
    doc, counts = timeline(path, tmp_path)
    assert problems(doc) == []
    assert doc["displayTimeUnit"] == "ns" and doc["metadata"]["source"] == "kfdtrace export"
    assert counts["slices"] == len(of_phase(doc, "X")) and counts["instants"] == len(of_phase(doc, "i"))
    assert counts["flows"] == len(of_phase(doc, "s")) == len(of_phase(doc, "f"))


@pytest.mark.parametrize("path", SAMPLES, ids=os.path.basename)
def test_tracks_slices_and_flows_are_what_the_workload_implies(path, tmp_path):
    doc, counts = timeline(path, tmp_path)
    implied = implied_by_the_records(path)
    assert counts["flows"] == implied["flows"] == EXPECTED[path]["flows"]
    assert counts["slices"] == implied["slices"] and counts["instants"] == implied["instants"]
    threads = named(doc, "thread_name")
    gpu = sorted(name for (pid, _), name in threads.items() if pid == export.GPU_PID)
    assert gpu == EXPECTED[path]["queues"]
    assert [name for (pid, _), name in threads.items() if pid == export.CPU_PID] == ["MainThread (thread 0)"]
    assert counts["tracks"] == len(threads) == len(EXPECTED[path]["queues"]) + 1
    assert len({tid for _, tid in threads}) == len(threads)  # tids unique across processes (Perfetto keys by tid)


def test_ping_and_pong_arrows_cross_between_the_cpu_and_the_queue(tmp_path):
    doc, _ = timeline(PING_PONG, tmp_path)
    starts = {e["id"]: e for e in of_phase(doc, "s")}
    crossing = {(e["name"], starts[e["id"]]["pid"], e["pid"]) for e in of_phase(doc, "f")}
    assert crossing == {("ping (semaphores+0x10)", export.CPU_PID, export.GPU_PID),
                        ("pong (semaphores+0x20)", export.GPU_PID, export.CPU_PID)}


def test_peer_ring_arrows_join_the_two_gpus_queues(tmp_path):
    doc, _ = timeline(PEER_RING, tmp_path)
    starts = {e["id"]: e for e in of_phase(doc, "s")}
    between_queues = [e for e in of_phase(doc, "f") if e["pid"] == starts[e["id"]]["pid"] == export.GPU_PID]
    assert len(between_queues) == 5 and all(e["tid"] != starts[e["id"]]["tid"] for e in between_queues)


def ns(us: float) -> int:
    return round(us * 1000)


def end(x: dict) -> int:
    return ns(x["ts"]) + ns(x["dur"])


def enclosing(doc: dict, e: dict) -> dict:
    """The innermost slice holding event `e` on its track (a packet, not its submission, when they coincide)."""
    held = [x for x in of_phase(doc, "X") if (x["pid"], x["tid"]) == (e["pid"], e["tid"])
            and ns(x["ts"]) <= ns(e["ts"]) <= end(x)]
    return min(held, key=lambda x: (x["dur"], x["name"].startswith("submission ")))


@pytest.mark.parametrize("path", SAMPLES, ids=os.path.basename)
def test_a_wait_ends_after_its_signal_and_a_signal_packet_is_a_signal(path, tmp_path):
    """The layout rule: a waiting packet ends no earlier than the signal it needed; each arrow starts at a
    packet the tables tag as signalling (a FENCE, an AQL packet with a completion signal, or a CPU signal) and
    ends at one tagged as waiting (POLL_REGMEM, an AQL BARRIER_AND, or a CPU wait)."""
    from kfdtrace.driver.aql import AQL

    completing = {d.name for d in AQL.defs if any(s.role == "completion" for s in AQL.signals[d.name])}
    doc, _ = timeline(path, tmp_path)
    starts = {e["id"]: e for e in of_phase(doc, "s")}
    for f in of_phase(doc, "f"):
        src, dst = enclosing(doc, starts[f["id"]]), enclosing(doc, f)
        assert end(src) <= end(dst)
        assert src["name"] in {"FENCE", *completing} or src["name"].startswith("signal "), src
        assert dst["name"] in ("POLL_REGMEM", "BARRIER_AND") or dst["name"].startswith("wait "), dst


@pytest.mark.parametrize("path", SAMPLES, ids=os.path.basename)
def test_submissions_start_after_their_doorbell_and_hold_their_packets_end_to_end(path, tmp_path):
    doc, _ = timeline(path, tmp_path)
    gpu = [e for e in of_phase(doc, "X") if e["pid"] == export.GPU_PID]
    subs = [e for e in gpu if e["name"].startswith("submission ")]
    assert subs
    for s in subs:
        assert ns(s["ts"]) >= ns(s["args"]["doorbell_us"])
        inside = [e for e in gpu if e["tid"] == s["tid"] and e is not s and ns(s["ts"]) <= ns(e["ts"])
                  and end(e) <= end(s)]
        assert inside[0]["ts"] == s["ts"] and end(inside[-1]) == end(s)
        assert all(end(a) == ns(b["ts"]) for a, b in zip(inside, inside[1:], strict=False))


def test_packets_carry_their_fields_with_addresses_named_by_buffer(tmp_path):
    doc, _ = timeline(STRESS, tmp_path)
    copy = next(e for e in of_phase(doc, "X") if e["name"] == "COPY_LINEAR")
    assert copy["args"]["fields"]["count"] == 0xFFF
    assert copy["args"]["addresses"]["src"]["where"] == "source+0x0"


def test_ping_pong_matches_its_golden_timeline(tmp_path):
    doc, _ = timeline(PING_PONG, tmp_path)
    with open(GOLDEN) as f:
        assert doc == json.load(f), f"the timeline changed: regenerate {GOLDEN} if that was meant (see the top)"


# -- the rules themselves ------------------------------------------------------------------------------------
def _doc(*events: dict) -> dict:
    names = [{"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "p"}},
             {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "t"}},
             {"name": "thread_name", "ph": "M", "pid": 1, "tid": 2, "args": {"name": "u"}}]
    return {"traceEvents": [*names, *events], "displayTimeUnit": "ns"}


def _x(ts: float, dur: float, tid: int = 1) -> dict:
    return {"name": "x", "ph": "X", "ts": ts, "dur": dur, "pid": 1, "tid": tid}


def _flow(ph: str, ts: float, tid: int, fid: int = 1) -> dict:
    return {"name": "f", "ph": ph, "id": fid, "ts": ts, "pid": 1, "tid": tid, **({"bp": "e"} if ph == "f" else {})}


@pytest.mark.parametrize(("events", "broken"), [
    ([_x(0, 10), _x(5, 10)], "overlaps"),
    ([_x(5, 1), _x(0, 1)], "before the previous event"),
    ([_x(0, -1)], "X with dur"),
    ([{**_x(0, 1), "ts": "0"}], "ts '0' is not a number"),
    ([{**_x(0, 1), "tid": "1"}], "tid '1' is not an int"),
    ([{**_x(0, 1), "ph": "Z"}], "unknown phase"),
    ([_x(0, 1, tid=3)], "track (1, 3) has no thread_name"),
    ([{"name": "b", "ph": "B", "ts": 0, "pid": 1, "tid": 1}], "B without an E"),
    ([_x(0, 10), _flow("s", 5, 1), _x(0, 2, tid=2), _flow("f", 1, 2)], "after it finishes"),
    ([_x(0, 10), _flow("s", 5, 1)], "1 starts and 0 finishes"),
    ([_x(0, 10), _flow("s", 5, 1), _flow("f", 6, 2)], "is in no slice"),
    ([_x(0, 10), _flow("s", 5, 1), {**_flow("f", 6, 1), "bp": None}], "does not bind"),
])
def test_the_rules_catch_what_they_forbid(events, broken):
    assert any(broken in p for p in problems(_doc(*events))), problems(_doc(*events))


def test_the_rules_allow_nesting_touching_slices_and_a_flow_across_tracks():
    ok = _doc(_x(0, 10), _x(0, 4), _x(4, 6), _flow("s", 9.999, 1), _x(10, 0), _x(10, 5), _x(0, 20, tid=2),
              _flow("f", 19.999, 2))
    assert problems(ok) == []


# -- pieces ---------------------------------------------------------------------------------------------------------
def test_semaphore_facts_put_64_bit_halves_together_from_the_tags():
    d = SDMA["sdma6"]
    ring = b"".join([
        d.build("POLL_REGMEM", func=5, mem_poll=1, addr=0x1004, ref=0, mask=0xFFFFFFFF),  # high, then low
        d.build("POLL_REGMEM", func=5, mem_poll=1, addr=0x1000, ref=7, mask=0xFFFFFFFF),
        d.build("POLL_REGMEM", func=5, mem_poll=1, addr=0x3000, ref=1, mask=0xFF),  # masked: not a >= wait
        d.build("FENCE", addr=0x2000, data=9), d.build("FENCE", addr=0x2004, data=1),  # low, then high
        d.build("FENCE", addr=0x5000, data=3),
    ])
    signals, waits = semaphore_facts(list(d.iter_packets(ring)))
    assert signals == [(4, 0x2000, 1 << 32 | 9), (5, 0x5000, 3)]
    assert waits == [(1, 0x1000, 7)]


# -- the command ------------------------------------------------------------------------------------------------------
def test_the_command_writes_a_timeline(tmp_path):
    out = str(tmp_path / "t.json")
    res = run("export", STRESS, "--perfetto", out)
    assert res.exit_code == 0 and res.output == ""
    with open(out) as f:
        doc = json.load(f)
    assert problems(doc) == [] and len(of_phase(doc, "s")) == EXPECTED[STRESS]["flows"]


def test_the_command_writes_a_timeline_to_stdout():
    res = run("export", PEER_RING, "--perfetto", "-")
    assert res.exit_code == 0 and problems(json.loads(res.output)) == []


@pytest.mark.parametrize("path", SAMPLES, ids=os.path.basename)
def test_jsonl_is_dump_json_one_record_a_line(path):
    res = run("export", path, "--jsonl", "-")
    assert res.exit_code == 0
    lines = res.output.splitlines()
    with TraceReader(path) as r:
        assert len(lines) == r.record_count
    assert [json.loads(line)["n"] for line in lines] == list(range(len(lines)))
    assert res.output == run("dump", "--json", path).output


def test_jsonl_to_a_file_counts_its_records(tmp_path):
    out = tmp_path / "r.jsonl"
    with TraceReader(PING_PONG) as r, open(out, "w") as f:
        n, records = export_jsonl(r, f), r.record_count
    assert n == len(out.read_text().splitlines()) == records


@pytest.mark.parametrize("args", [[], ["--jsonl", "-", "--perfetto", "x.json"]])
def test_one_output_must_be_given(args):
    res = run("export", STRESS, *args)
    assert res.exit_code == 1 and "give one of --jsonl OUT and --perfetto OUT" in res.output


# -- hostile and odd traces ----------------------------------------------------------------------------------------
def one_line_error(res) -> str:
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and "error:" in lines[0], res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    return lines[0]


@pytest.mark.parametrize("mode", ["--jsonl", "--perfetto"])
def test_a_corrupt_trace_is_one_line(tmp_path, mode):
    data = open(STRESS, "rb").read()
    bad = tmp_path / "bad.kfdtrace"
    bad.write_bytes(data[:8] + b"\xff" * 12 + data[20:])
    out = tmp_path / "out.json"
    one_line_error(run("export", str(bad), mode, str(out)))
    assert not out.exists()


def test_a_malformed_record_is_one_line_naming_it(tmp_path):
    path = str(tmp_path / "m.kfdtrace")
    with TraceWriter(path, {}) as w:
        w.record("cpu_wait", addr="here", value=1, timeout=1.0, ok=True)
        w.close({})
    for mode in ("--jsonl", "--perfetto"):
        assert "record 0 (cpu_wait)" in one_line_error(run("export", path, mode, str(tmp_path / "o")))


@pytest.mark.parametrize("fraction", [0.5, 0.85])
def test_a_truncated_trace_exports_what_it_holds(tmp_path, fraction):
    framed = many_frames(STRESS, tmp_path)
    data = open(framed, "rb").read()
    cut = tmp_path / "cut.kfdtrace"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with TraceReader(str(cut)) as r, TraceReader(framed) as whole:
        held = r.record_count
        assert 0 < held < whole.record_count
    res = run("export", str(cut), "--jsonl", "-")
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == held and "warning: trace was not closed" in res.stderr
    doc, counts = timeline(str(cut), tmp_path)
    implied = implied_by_the_records(str(cut))
    assert problems(doc) == []
    assert (counts["slices"], counts["flows"]) == (implied["slices"], implied["flows"])


def test_a_timeline_too_large_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "MAX_EVENTS", 100)
    out = tmp_path / "big.json"
    assert "more than 100 events" in one_line_error(run("export", PING_PONG, "--perfetto", str(out)))
    assert not out.exists()


def _queue(w: TraceWriter, queue: int) -> None:
    w.record("queue", queue=queue, gpu=1, type=1, ring=0x10000 * queue, ring_size=4096, rptr=0, wptr=0,
             doorbell_offset=0, engine=0, dialect="sdma6")


def _doorbell(w: TraceWriter, queue: int, ring: bytes, t: int | None, value: int) -> None:
    w.record("doorbell", queue=queue, value=value, ring=ring, addr=None, t=t, tid=1)


def test_waits_in_a_cycle_unknown_queues_and_odd_times_still_make_a_valid_timeline(tmp_path):
    """Two queues each waiting for the other's later signal (a recording that hung), a doorbell of an unknown
    queue, ring bytes that are no packets, a record without a time, a clock going back, a NaN timeout."""
    d, path = SDMA["sdma6"], str(tmp_path / "odd.kfdtrace")
    a, b = 0x1000, 0x2000
    with TraceWriter(path, {}) as w:
        _queue(w, 1), _queue(w, 2)
        _doorbell(w, 1, d.build("POLL_REGMEM", func=5, mem_poll=1, addr=a, ref=1, mask=0xFFFFFFFF)
                  + d.build("FENCE", addr=b, data=1), 1000, 40)
        _doorbell(w, 2, d.build("POLL_REGMEM", func=5, mem_poll=1, addr=b, ref=1, mask=0xFFFFFFFF)
                  + d.build("FENCE", addr=a, data=1), 900, 40)
        _doorbell(w, 7, b"\x01" * 16, 1200, 16)
        _doorbell(w, 2, struct.pack("<II", 0xFFFFFFFF, 0), None, 48)
        w.record("cpu_wait", addr=a, value=1, timeout=float("nan"), ok=False, t=800, tid=2)
        w.record("event_wait", event=3, timeout=-1.0, ok=True, t=1 << 40, tid=2)
        w.close({})
    doc, counts = timeline(path, tmp_path)
    assert problems(doc) == []
    assert counts["tracks"] == 4 and counts["flows"] == 1  # the arrow the cycle cannot order is left out
    assert counts["slices"] == 3 + 4 + 2  # 3 submissions (one of no packets), 4 packets, 2 CPU waits


def test_a_cpu_wait_squeezes_the_packets_before_the_signal_it_saw(tmp_path):
    d, path = SDMA["sdma6"], str(tmp_path / "squeeze.kfdtrace")
    ring = d.build("FENCE", addr=0x9000, data=5) * 3 + d.build("FENCE", addr=0x1000, data=1)
    with TraceWriter(path, {}) as w:
        _queue(w, 1)
        _doorbell(w, 1, ring, 10_000, len(ring))
        w.record("cpu_wait", addr=0x1000, value=1, timeout=1.0, ok=True, t=11_500, tid=1)
        w.close({})
    doc, counts = timeline(path, tmp_path)
    assert problems(doc) == [] and counts["flows"] == 1
    fences = [e for e in of_phase(doc, "X") if e["name"] == "FENCE"]
    assert fences[0]["ts"] == 10.0 and fences[0]["dur"] == 1.0  # PACKET_NS each while there is room
    assert end(fences[-1]) < 11_500  # done before the wait that saw it returned


def test_a_semaphore_moved_back_by_the_cpu_starts_a_new_life(tmp_path):
    """A wait matches the signals of its own life: after the slot is reset, not the larger value before."""
    path = str(tmp_path / "reset.kfdtrace")
    with TraceWriter(path, {}) as w:
        for t, value in ((1000, 1), (2000, 0), (3000, 2)):
            w.record("cpu_signal", addr=0x1000, value=value, name="s", t=t, tid=1)
        w.record("cpu_wait", addr=0x1000, value=1, timeout=1.0, ok=True, t=4000, tid=2)
        w.close({})
    doc, counts = timeline(path, tmp_path)
    assert problems(doc) == [] and counts["flows"] == 1
    assert enclosing(doc, of_phase(doc, "s")[0])["args"]["n"] == 2


@pytest.mark.parametrize("family", ["gfx90a", "gfx1201"])
def test_replay_draws_the_same_timeline_with_its_own_times(family, tmp_path):
    """`replay --timeline`: the recording's tracks, slices and arrows, placed at the times the replay took."""
    recorded, replayed = str(tmp_path / "rec.json"), str(tmp_path / "rep.json")
    with TraceReader(STRESS) as r:
        counts = export_perfetto(r, recorded)
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", STRESS, "--emulate", family, "--timeline",
                          replayed], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    doc = json.load(open(replayed))
    assert problems(doc) == [] and family in doc["metadata"]["source"]
    assert {k: doc["metadata"][k] for k in counts} == counts
    assert doc["metadata"]["timing"].startswith("record times are the replay's, taken as it handled each; GPU times")
    doorbells = [e["ts"] for e in doc["traceEvents"] if e.get("name", "").startswith("doorbell")]
    recorded_doorbells = [e["ts"] for e in json.load(open(recorded))["traceEvents"]
                          if e.get("name", "").startswith("doorbell")]
    assert len(doorbells) == len(recorded_doorbells) == 32 and doorbells != recorded_doorbells
    assert doorbells == sorted(doorbells)


def test_replay_refuses_a_timeline_it_cannot_write_before_replaying(tmp_path):
    """A --timeline in a missing folder is bad input (4, one line) before anything runs, not an internal error
    after the whole replay; an existing file it could write is left as it was until the replay writes it."""
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", STRESS, "--emulate-recorded", "--timeline",
                          str(tmp_path / "missing" / "t.json")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 4 and res.stdout == ""
    assert res.stderr.splitlines() == [f"replay: error: --timeline {tmp_path / 'missing' / 't.json'}: cannot write "
                                       "the timeline there: No such file or directory"]
    res = subprocess.run([sys.executable, "-m", "kfdtrace.replay.cli", STRESS, "--emulate-recorded", "--timeline",
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 4 and "is a directory" in res.stderr  # click's check; its usage errors exit 4 too


def test_the_output_check_leaves_no_file_and_no_changed_one(tmp_path):
    from kfdtrace.cli import check_output

    new, old = tmp_path / "new.json", tmp_path / "old.json"
    old.write_bytes(b"kept")
    check_output("--timeline", str(new), "the timeline")
    check_output("--timeline", str(old), "the timeline")
    assert not new.exists() and old.read_bytes() == b"kept"


def test_aql_signals_join_a_dispatch_to_the_barrier_and_cpu_wait_after_it(tmp_path):
    """Queue A's dispatch decrements a_done; queue B's BARRIER_AND waits for a_done at 0 and decrements b_done;
    the CPU waits for b_done at 0: an arrow from the dispatch to the barrier, one from the barrier to the CPU
    wait, and the barrier ends after the dispatch. The dispatch's slice is named by its kernel (campaign 122)."""
    import numpy as np

    from kfdtrace.capture import record
    from kfdtrace.driver import System
    from kfdtrace.driver.aql_queue import HsaSignal
    from kfdtrace.driver.kernels.device import corpus

    path = str(tmp_path / "chain.kfdtrace")
    with record(path), System.open(emulate="gfx942") as system:
        gpu = system.devices[0]
        kernel = corpus(gpu).kernel("vector_add")
        a, b, c = (gpu.alloc(4096, "gtt", name=name) for name in "abc")
        qa, qb = gpu.aql_queue(name="A"), gpu.aql_queue(name="B")
        a_done, b_done = HsaSignal(system, 1, "a_done"), HsaSignal(system, 1, "b_done")
        qa.dispatch(kernel, (1024,), (64,), a, b, c, np.uint32(1024), completion=a_done)
        qb.barrier_and([a_done], completion=b_done)
        b_done.wait(0, timeout=120)
    doc, counts = timeline(path, tmp_path)
    assert problems(doc) == [] and counts["flows"] == implied_by_the_records(path)["flows"] == 2
    starts = {e["id"]: e for e in of_phase(doc, "s")}
    threads = named(doc, "thread_name")
    arrows = sorted((threads[(s["pid"], s["tid"])], enclosing(doc, s)["name"], threads[(f["pid"], f["tid"])],
                     enclosing(doc, f)["name"], f["name"].split(" (")[0])
                    for f in of_phase(doc, "f") for s in [starts[f["id"]]])
    assert arrows == [
        ("queue 0 (A) COMPUTE_AQL", "vector_add (KERNEL_DISPATCH)", "queue 1 (B) COMPUTE_AQL", "BARRIER_AND", "a_done"),
        ("queue 1 (B) COMPUTE_AQL", "BARRIER_AND", "MainThread (thread 0)",
         "wait signal b_done (signal b_done+0x8) EQ 0", "b_done")], arrows
    for f in of_phase(doc, "f"):
        assert end(enclosing(doc, starts[f["id"]])) <= end(enclosing(doc, f))


def test_a_queue_id_used_again_gets_a_track_of_its_own_named_apart(tmp_path):
    from kfdtrace.capture import record
    from kfdtrace.driver import System

    path = str(tmp_path / "again.kfdtrace")
    with record(path), System.open(emulate="gfx1100") as system:
        gpu = system.devices[0]
        buf = gpu.alloc(4096, "gtt", name="b")
        for value in (1, 2):
            q = gpu.sdma_queue(name="twice")
            q.fill(buf, value, 4096).sync()
            q.destroy()
    doc, _ = timeline(path, tmp_path)
    assert problems(doc) == []
    queues = sorted(name for (pid, _), name in named(doc, "thread_name").items() if pid == export.GPU_PID)
    assert queues == ["queue 0 (twice) SDMA #1", "queue 0 (twice) SDMA #2"]
