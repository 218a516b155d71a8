"""Fuzzed traces (issue 8, "what must hold afterwards"): seeded structure-aware mutations of every sample
(tests/fuzz/mutate.py), each replayed and checked by the real commands in a child process with a 4 GiB
address-space limit and a wall-clock timeout. Every case must end with an exit status in 0..4 (5, an internal
error, is a failure too), no traceback, no signal, no hang. A failure names its sample, seed and mutations;
`python -m tests.fuzz.campaign --repro SAMPLE:SEED` rebuilds its trace. The long run is tests/fuzz/campaign.py.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from kfdtrace.driver.memory import ENV_GUARD_PAGES
from tests.fuzz import campaign, mutate

CASES_PER_SAMPLE = 30  # replay and every trace tool each, on 2 workers; one test per sample, so pytest -n spreads them
SEED = 8
WORKERS = 2


def run_case(tmp: str, sample: str, targets: str, seed: int) -> list[str]:
    """The failures of one case, each a line naming the seed, the mutation, the command and its last stderr."""
    trace = os.path.join(tmp, f"{os.path.basename(sample)}-{seed}.kfdtrace")
    what = mutate.make_case(sample, seed, trace)
    failures = []
    for argv in campaign.commands(trace, targets, recorded=campaign.on_recorded(seed)):
        kind, status, stderr = campaign.run_cli(argv)
        if kind != "clean":
            failures.append(f"{kind}: {os.path.basename(sample)}:{seed} [{what}] `python {' '.join(argv)}` "
                            f"status {status}: {campaign.last_line(stderr)}")
    return failures


def test_the_mutator_is_seeded_and_changes_the_trace(tmp_path):
    sample = mutate.samples()[0]
    a, b, c = (str(tmp_path / n) for n in "abc")
    assert mutate.make_case(sample, 3, a) == mutate.make_case(sample, 3, b)
    with open(a, "rb") as fa, open(b, "rb") as fb, open(sample, "rb") as fs:
        data = fa.read()
        assert data == fb.read() and data != fs.read()
    assert mutate.make_case(sample, 3, a) != mutate.make_case(sample, 4, c)


@pytest.mark.parametrize("status, stderr, kind", [
    (0, "", "clean"), (4, "replay: error: x.kfdtrace: bad\n", "clean"), (1, "Traceback (most recent call last):\n"
     "  File ...\nKeyError: 'x'\n", "traceback"), (5, "replay: internal error: KeyError: 'x'\n", "exit 5"),
    (-11, "", "crash"), (6, "", "crash"), (None, "", "hang"), (1, "Traceback ...\nMemoryError\n", "memory")])
def test_classify(status, stderr, kind):
    assert campaign.classify(status, stderr) == kind


def test_the_runner_catches_a_traceback_an_internal_error_a_signal_and_a_hang():
    """The harness itself can fail: a child that raises, exits 5, dies of a signal or sleeps is not clean."""
    assert campaign.run_cli(["-c", "raise KeyError('x')"])[0] == "traceback"
    assert campaign.run_cli(["-c", "import sys; sys.exit(5)"])[0] == "exit 5"
    assert campaign.run_cli(["-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])[0] == "crash"
    assert campaign.run_cli(["-c", "import time; time.sleep(30)"], timeout=1)[0] == "hang"
    assert campaign.run_cli(["-c", "bytearray(8 << 30)"])[0] == "memory"
    assert campaign.run_cli(["-c", "import sys; sys.exit(4)"]) == ("clean", 4, "")


def test_unmutated_samples_replay_clean(tmp_path):
    for sample in mutate.samples():
        for argv in campaign.commands(sample, mutate.sample_targets(sample), str(tmp_path / "out")):
            kind, status, stderr = campaign.run_cli(argv)
            assert (kind, status) == ("clean", 0), f"{sample}: {stderr}"


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and the emulator are Linux-only")
@pytest.mark.parametrize("sample", mutate.samples(), ids=os.path.basename)
def test_fuzzed_traces_never_crash_the_tools(sample, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_GUARD_PAGES, "1")  # an access past any replayed buffer faults at once
    jobs = [(sample, mutate.sample_targets(sample), SEED * 1000 + i) for i in range(CASES_PER_SAMPLE)]
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda job: run_case(str(tmp_path), *job), jobs))
    failures = [line for result in results for line in result]
    ran = len(jobs) * len(campaign.commands("t", "gfx942"))
    assert not failures, f"{len(failures)} of {ran} commands failed:\n" + "\n".join(failures)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and the emulator are Linux-only")
def test_fuzzed_aql_traces_never_crash_a_replay_on_pm4_queues(tmp_path, monkeypatch):
    """--queue-type pm4 turns every AQL packet into PM4 ones: the fuzzed compute sample through that path (found a
    dispatch of 0 work-items that was an internal error)."""
    monkeypatch.setenv(ENV_GUARD_PAGES, "1")
    sample = os.path.join(mutate.SAMPLES_DIR, "vector_add_aql-gfx942.kfdtrace")

    def case(seed: int) -> str | None:
        trace = str(tmp_path / f"{seed}.kfdtrace")
        what = mutate.make_case(sample, seed, trace)
        argv = ["-m", "kfdtrace.replay.cli", trace, "--emulate", "gfx1100", "--queue-type", "pm4", "--timeout", "2"]
        kind, status, stderr = campaign.run_cli(argv)
        return None if kind == "clean" else \
            f"{kind}: seed {seed} [{what}] status {status}: {campaign.last_line(stderr)}"
    with ThreadPoolExecutor(WORKERS) as pool:
        seeds = [0, *range(SEED * 1000, SEED * 1000 + CASES_PER_SAMPLE)]  # seed 0: the dispatch of 0 work-items
        failures = [f for f in pool.map(case, seeds) if f]
    assert not failures, "\n".join(failures)


def test_a_buffer_record_without_its_name_replays(tmp_path):
    """Found by the fuzzer: replay read the optional name as r.fields['name'] (KeyError, exit 5)."""
    from tests.test_replay import rewrite

    sample = os.path.join(mutate.SAMPLES_DIR, "sdma_stress-gfx942.kfdtrace")
    out = str(tmp_path / "noname.kfdtrace")
    rewrite(sample, out, lambda rec, r, w: {k: v for k, v in rec.fields.items()
                                             if not (rec.type == "buffer" and k == "name")})
    kind, status, stderr = campaign.run_cli(campaign.commands(out, "gfx942")[0])
    assert (kind, status) == ("clean", 0), stderr  # a buffer's name is optional


def test_a_diverging_checkpoint_buffer_without_its_name_is_a_divergence_not_an_internal_error(tmp_path):
    """Found by reading for the same pattern: a diverging checkpoint entry read entry['name'] (exit 5)."""
    from tests.test_replay import rewrite

    sample = os.path.join(mutate.SAMPLES_DIR, "sdma_stress-gfx942.kfdtrace")
    out = str(tmp_path / "noname.kfdtrace")
    first_mem = []

    def edit(rec, r, w):
        fields = dict(rec.fields)
        if rec.type == "checkpoint":
            fields["buffers"] = [{k: v for k, v in b.items() if k != "name"} for b in fields["buffers"]]
        if rec.type == "mem" and not first_mem:  # the first CPU write stores other bytes: the replay diverges
            first_mem.append(rec.n)
            fields["key"] = w.blob(b"\x01" * fields["size"])
        return fields

    rewrite(sample, out, edit)
    kind, status, stderr = campaign.run_cli(campaign.commands(out, "gfx942")[0])
    assert (kind, status) == ("clean", 1), stderr


def test_a_queue_destroy_without_its_write_pointer_replays(tmp_path):
    """Found by the campaign (peer_ring-2xgfx942:405232): a null wptr was compared with the rptr (exit 5)."""
    from tests.test_replay import rewrite

    sample = os.path.join(mutate.SAMPLES_DIR, "peer_ring-2xgfx942.kfdtrace")
    out = str(tmp_path / "nowptr.kfdtrace")
    rewrite(sample, out, lambda rec, r, w: {**rec.fields, "wptr": None} if rec.type == "queue_destroy" else rec.fields)
    kind, status, stderr = campaign.run_cli(campaign.commands(out, "gfx942,gfx942")[0])
    assert (kind, status) == ("clean", 0), stderr  # the read pointer is compared with the last doorbell instead
