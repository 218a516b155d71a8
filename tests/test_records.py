"""The record table (traces/records.py): what capture's README documents, what the reader refuses."""

from __future__ import annotations

import os
import re

import pytest
from click.testing import CliRunner

from kfdtrace.cli import main as kfdtrace_cli
from kfdtrace.replay.cli import main as replay_cli
from kfdtrace.replay.engine import EXIT_BAD_INPUT, EXIT_OK
from kfdtrace.traces import records as R
from kfdtrace.traces.format import Record, TraceReader, TraceWriter

from .test_replay import rewrite

ROOT = os.path.join(os.path.dirname(__file__), "..")
SAMPLE = os.path.join(ROOT, "traces", "samples", "sdma_stress-gfx942.kfdtrace")


def _top_level(text: str) -> str:
    """`text` without anything inside parentheses or brackets (field explanations, nested fields)."""
    out, depth = [], 0
    for ch in text:
        depth += ch in "([{"
        if not depth:
            out.append(ch)
        depth -= ch in ")]}"
    return "".join(out)


def documented_types() -> dict[str, set[str]]:
    """capture/README.md's record table: type -> the fields its row names."""
    text = open(os.path.join(ROOT, "capture", "README.md")).read()
    table = text[text.index("| type | fields | written when |"):].split("\n\n")[0].splitlines()[2:]
    out = {}
    for row in table:
        types_cell, fields_cell = row.split(" | ")[:2]
        types = re.findall(r"`(\w+)`", types_cell)
        parts = [set(re.findall(r"`(\w+)`", _top_level(p))) for p in fields_cell.split(" / ")]
        for i, t in enumerate(types):
            out[t] = parts[i if len(parts) > 1 else 0]
    return out


def test_the_readme_documents_exactly_the_record_table():
    documented = documented_types()
    assert documented.keys() == R.RECORD_TYPES.keys()
    for name, t in R.RECORD_TYPES.items():
        assert documented[name] - R.COMMON.keys() == t.fields.keys() - R.COMMON.keys(), name


def test_a_record_type_is_the_name_the_writer_and_reader_use():
    assert R.ALLOC == "alloc" and R.RECORD_TYPES["alloc"] is R.ALLOC and isinstance(R.ALLOC, str)


@pytest.mark.parametrize("fields, why", [
    ({"va": 4096, "size": 4096, "gpu": 1, "flags": 0, "handle": 1}, "has no 'domain' field"),
    ({"va": -1, "size": 4096, "domain": "gtt", "gpu": 1, "flags": 0, "handle": 1}, "malformed (int) 'va'"),
    ({"va": 4096, "size": 4096, "domain": b"gtt", "gpu": 1, "flags": 0, "handle": 1}, "malformed (bytes) 'domain'"),
    ({"va": 4096, "size": 4096.0, "domain": "gtt", "gpu": 1, "flags": 0, "handle": 1}, "malformed (float) 'size'"),
])
def test_a_malformed_record_names_its_field(fields, why):
    with pytest.raises(R.MalformedRecord, match=re.escape("record 7 (alloc) ") + ".*" + re.escape(why)):
        R.check(Record(7, "alloc", fields))


def test_nested_fields_are_checked_too():
    entry = {"va": 4096, "size": 4096, "name": "out", "keys": [b"k" * 15], "hash": b"h" * 16}
    with pytest.raises(R.MalformedRecord, match="'buffers'"):
        R.check(Record(1, "checkpoint", {"wait": {}, "buffers": [entry]}))
    entry["keys"] = [b"k" * 16]
    assert R.check(Record(1, "checkpoint", {"wait": {}, "buffers": [entry]}))


def test_unknown_types_and_fields_pass_unless_strict():
    assert R.check(Record(1, "future_type", {"x": 1}))
    assert R.check(Record(2, "event_set", {"event": 3, "future_field": 1}))
    with pytest.raises(R.MalformedRecord, match="does not know"):
        R.check(Record(1, "future_type", {"x": 1}), strict=True)
    with pytest.raises(R.MalformedRecord, match="future_field"):
        R.check(Record(2, "event_set", {"event": 3, "future_field": 1}), strict=True)


def test_info_check_names_a_malformed_record(tmp_path):
    bad = str(tmp_path / "bad.kfdtrace")
    rewrite(SAMPLE, bad, lambda rec, r, w: {k: v for k, v in rec.fields.items()
                                            if not (rec.type == "alloc" and k == "domain")})
    res = CliRunner().invoke(kfdtrace_cli, ["info", "--check", bad])
    assert res.exit_code != 0 and "(alloc) has no 'domain' field" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(kfdtrace_cli, ["info", "--check", SAMPLE])
    assert res.exit_code == 0 and "records are well-formed" in res.output, res.output


@pytest.mark.parametrize("where", ["mem", "checkpoint"])
def test_info_check_names_a_record_whose_blob_the_trace_lacks(where, tmp_path):
    """Campaign 88: a trace whose mem record named a blob it lacked passed `info --check`; replay refused it."""
    bad, lost = str(tmp_path / "bad.kfdtrace"), b"\x5a" * 16

    def edit(rec, r, w):
        if rec.type == where == "mem":
            return {**rec.fields, "key": lost}
        if rec.type == where == "checkpoint" and rec.fields["buffers"]:
            first, *rest = rec.fields["buffers"]
            return {**rec.fields, "buffers": [{**first, "keys": [lost, *first["keys"][1:]], "hash": None}, *rest]}
        return rec.fields

    rewrite(SAMPLE, bad, edit)
    res = CliRunner().invoke(kfdtrace_cli, ["info", "--check", bad])
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    assert f"names blob {lost.hex()}, which the trace lacks (corrupt trace)" in res.output, res.output


def test_info_check_passes_a_record_type_it_does_not_know(tmp_path):
    """A type of a later format is read unchecked (R.check), its fields too: the fuzzer found the blob check
    looking its fields up in the table."""
    later = str(tmp_path / "later.kfdtrace")
    rewrite(SAMPLE, later, lambda rec, r, w: [(rec.type, rec.fields), ("future_type", {"x": 1})]
            if rec.type == "doorbell" else rec.fields)
    res = CliRunner().invoke(kfdtrace_cli, ["info", "--check", later])
    assert res.exit_code == 0 and "records are well-formed" in res.output, res.output


def test_info_names_a_malformed_summary_field(tmp_path):
    bad = str(tmp_path / "bad.kfdtrace")
    with TraceReader(SAMPLE) as r, TraceWriter(bad, r.header) as w:
        w.close({k: v for k, v in r.summary.items() if k != "duration_ns"})
    res = CliRunner().invoke(kfdtrace_cli, ["info", bad])
    assert res.exit_code != 0 and "summary has no 'duration_ns' field" in res.output, res.output


def test_a_doorbell_of_no_known_queue_replays(tmp_path):
    """capture writes queue=null for a store to a doorbell it cannot attribute: readable, and ignored."""
    stray = str(tmp_path / "stray.kfdtrace")
    rewrite(SAMPLE, stray, lambda rec, r, w: [("doorbell", {"queue": None, "addr": 0x1000, "value": 8, "ring": b""}),
                                              (rec.type, rec.fields)] if rec.type == "doorbell" else rec.fields)
    res = CliRunner().invoke(replay_cli, [stray])
    assert res.exit_code == EXIT_OK, res.output
    wrong = str(tmp_path / "wrong.kfdtrace")
    rewrite(SAMPLE, wrong, lambda rec, r, w: {**rec.fields, "queue": "q"} if rec.type == "doorbell" else rec.fields)
    res = CliRunner().invoke(replay_cli, [wrong])
    assert res.exit_code == EXIT_BAD_INPUT and "malformed (str) 'queue'" in res.output, res.output


def test_an_absent_optional_field_reads_as_null():
    r = R.check(Record(3, "doorbell", {"value": 8, "ring": b""}))
    assert r.fields["queue"] is None and r.fields["addr"] is None


VALUES = [None, 0, 1, -1, 1 << 64, 2.5, True, "", "x", b"", bytes(16), b"k" * 15, [], [1], ["a"], {}, {"va": 1}]


@pytest.mark.parametrize("t", R.RECORD_TYPES.values(), ids=list(R.RECORD_TYPES))
def test_the_generated_check_agrees_with_the_table(t):
    """Each record type's generated `ok` says what `problem` says, field by field and value by value, and leaves
    the same fields behind (absent optional ones as null)."""
    good = {}
    for name, check in t.fields.items():
        good[name] = next(v for v in VALUES + [[{"va": 1, "size": 2, "keys": [bytes(16)]}]] if check(v))
    for name in [None, *t.fields]:
        for value in VALUES if name else [None]:
            fields = dict(good)
            if name is not None:
                fields[name] = value
            for absent in ([], [name] if name else []):
                a, b = {k: v for k, v in fields.items() if k not in absent}, None
                b = dict(a)
                assert t.ok(a) == (R.problem(b, t.fields) is None), (name, value, absent)
                if t.ok(dict(a)):
                    assert a == b
