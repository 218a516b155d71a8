"""replay.code_objects: which code object a replay loads for a recorded one on its device's target (the recorded
object, its bundle's entry, or one the user gives with --code-object / --code-objects), and the message refusing a
replay when none fits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kfdtrace.driver.code_object import load
from kfdtrace.driver.code_object_bundle import select
from kfdtrace.replay.code_objects import (
    CodeObjectOptions,
    check_options,
    choose,
    missing_message,
    parse_code_object_options,
    unfit,
)
from kfdtrace.traces.format import blob_key

HERE = Path(__file__).resolve().parent
BUILT = HERE.parent / "driver" / "kernels" / "built"
CORPUS_942, CORPUS_1100 = BUILT / "corpus-gfx942.co", BUILT / "corpus-gfx1100.co"
BUNDLE = BUILT / "corpus.hipfb"
NONE = CodeObjectOptions()


def record(path: Path, target: str = "gfx942", name: str | None = "corpus") -> tuple[bytes, dict]:
    """An object's bytes and the `code_object` record a program loading it on `target` leaves."""
    data = path.read_bytes()
    code = load(data, target)
    return data, {"va": 0x1000, "size": 0x20000, "key": blob_key(data), "target": str(code.target_id),
                  "kernels": {k: 0x1000 + v.descriptor_offset for k, v in code.kernels.items()},
                  "entries": {k: 0x1000 + v.entry_offset for k, v in code.kernels.items()}, "name": name}


def test_the_recorded_object_on_its_own_target() -> None:
    data, fields = record(CORPUS_942)
    choice = choose(data, fields, "gfx942", NONE)
    assert choice is not None and choice.source == "recorded" and choice.data == data
    assert choice.code.target_id.processor == "gfx942"


def test_the_recorded_bundles_entry_for_another_target() -> None:
    data, fields = record(BUNDLE)
    choice = choose(data, fields, "gfx1100", NONE)
    assert choice is not None and choice.source == "recorded bundle"
    assert choice.data == select(data, "gfx1100") and choice.code.target_id.processor == "gfx1100"
    assert choose(data, fields, "gfx942", NONE).source == "recorded"  # type: ignore[union-attr]


def test_a_build_in_the_code_objects_folder(tmp_path: Path) -> None:
    shutil.copy(CORPUS_1100, tmp_path / "corpus.gfx1100.co")
    shutil.copy(CORPUS_942, tmp_path / "corpus.co")  # the per-target build comes first
    data, fields = record(CORPUS_942)
    choice = choose(data, fields, "gfx1100", parse_code_object_options([], str(tmp_path)))
    assert choice is not None and choice.source == str(tmp_path / "corpus.gfx1100.co")
    assert choice.data == CORPUS_1100.read_bytes() and choice.code.target_id.processor == "gfx1100"


def test_a_bundle_in_the_code_objects_folder(tmp_path: Path) -> None:
    shutil.copy(BUNDLE, tmp_path / "corpus.hipfb")
    data, fields = record(CORPUS_942)
    choice = choose(data, fields, "gfx1201", parse_code_object_options([], str(tmp_path)))
    assert choice is not None and choice.source == str(tmp_path / "corpus.hipfb")
    assert choice.code.target_id.processor == "gfx1201"


@pytest.mark.parametrize("selector", ["corpus", "key8", "KEY12"])
def test_an_object_given_by_name_or_key_prefix(selector: str) -> None:
    data, fields = record(CORPUS_942)
    key = fields["key"].hex()
    selector = {"key8": key[:8], "KEY12": key[:12].upper()}.get(selector, selector)
    options = parse_code_object_options([f"{selector}={CORPUS_1100}"], None)
    choice = choose(data, fields, "gfx1100", options)
    assert choice is not None and choice.source == f"--code-object {selector}={CORPUS_1100}"
    assert choice.data == CORPUS_1100.read_bytes()


def test_a_given_object_replaces_the_recorded_one_on_its_own_target() -> None:
    data, fields = record(CORPUS_942)
    options = parse_code_object_options([f"corpus={BUNDLE}"], None)
    assert choose(data, fields, "gfx942", options).source == f"--code-object corpus={BUNDLE}"  # type: ignore[union-attr]


def test_a_given_object_for_another_target_leaves_the_recorded_one() -> None:
    data, fields = record(CORPUS_942)
    options = parse_code_object_options([f"corpus={CORPUS_1100}"], None)
    assert choose(data, fields, "gfx942", options).source == "recorded"  # type: ignore[union-attr]


def test_a_given_object_for_another_recorded_object_is_not_taken() -> None:
    data, fields = record(CORPUS_942)
    options = parse_code_object_options([f"other={CORPUS_1100}", f"0123456789={CORPUS_1100}"], None)
    assert choose(data, fields, "gfx1100", options) is None
    with pytest.raises(ValueError, match=r"--code-object other=.*no recorded code object is named 'other'.*"
                                         r"the trace's objects: object 'corpus' [0-9a-f]{8}\.\.\."):
        check_options(options, [fields])
    check_options(parse_code_object_options([f"corpus={CORPUS_1100}"], None), [fields])


def test_nothing_fits_and_the_message_names_kernels_target_and_how_to_give_one() -> None:
    data, fields = record(CORPUS_942)
    assert choose(data, fields, "gfx1100", NONE) is None
    key = fields["key"].hex()[:8]
    assert missing_message("gfx1100", [(fields, ["vector_add", "collatz"])], NONE) == (
        f"no code object for gfx1100: kernels vector_add, collatz (recorded for gfx942 in object 'corpus' {key}...) "
        f"need one; give --code-object corpus=PATH or --code-objects DIR with corpus.gfx1100.co")


def test_the_message_covers_every_object_and_what_was_tried(tmp_path: Path) -> None:
    shutil.copy(CORPUS_942, tmp_path / "corpus.gfx1100.co")  # misnamed: a gfx942 build
    options = parse_code_object_options([], str(tmp_path))
    data, fields = record(CORPUS_942)
    assert choose(data, fields, "gfx1100", options) is None
    _, unnamed = record(BUILT / "corpus-gfx90a.co", "gfx90a", name=None)
    message = missing_message("gfx1100", [(fields, ["vector_add"]), (unnamed, ["collatz"])], options)
    key, other = fields["key"].hex()[:8], unnamed["key"].hex()[:8]
    assert message == (
        f"no code object for gfx1100: kernel vector_add (recorded for gfx942 in object 'corpus' {key}...) and "
        f"kernel collatz (recorded for gfx90a in an unnamed object {other}...) need one; give --code-object "
        f"corpus=PATH and --code-object {other}=PATH or --code-objects DIR with corpus.gfx1100.co; "
        f"{tmp_path / 'corpus.gfx1100.co'} does not fit (code object is for gfx942; this device is gfx1100)")
    assert "\n" not in message


def test_a_recorded_name_never_reaches_outside_the_folder(tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    shutil.copy(CORPUS_1100, tmp_path / "corpus.gfx1100.co")
    data, fields = record(CORPUS_942, name="../corpus")
    assert choose(data, fields, "gfx1100", parse_code_object_options([], str(tmp_path / "inner"))) is None


@pytest.mark.parametrize("pair", ["corpus", "=x.co", "corpus="])
def test_bad_option_syntax(pair: str) -> None:
    with pytest.raises(ValueError, match=r"--code-object .*: give NAME_OR_HASH=PATH"):
        parse_code_object_options([pair], None)


def test_missing_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--code-object corpus=.*nope\.co: cannot read it: No such file"):
        parse_code_object_options([f"corpus={tmp_path / 'nope.co'}"], None)
    with pytest.raises(ValueError, match=r"--code-objects .*nowhere: no such folder"):
        parse_code_object_options([], str(tmp_path / "nowhere"))


def test_a_code_object_file_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """Campaign 50: --code-object k=/dev/zero ran out of memory, and a 3 GiB sparse file was read whole before it
    was found no ELF file."""
    with pytest.raises(ValueError, match=r"--code-object corpus=/dev/zero: cannot read it: not a "
                                         r"regular file"):
        parse_code_object_options(["corpus=/dev/zero"], None)
    huge = tmp_path / "huge.co"
    with huge.open("wb") as f:
        f.truncate((1 << 30) + 1)  # sparse: no disk taken
    with pytest.raises(ValueError, match=r"huge\.co: cannot read it: 1073741825 bytes, more than a code object "
                                         r"may be \(1073741824\)"):
        parse_code_object_options([f"corpus={huge}"], None)


@pytest.mark.parametrize("content", [b"hello, not an ELF", b"__CLANG_OFFLOAD_BUNDLE__" + bytes(8)])
def test_a_file_that_is_not_a_code_object(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.co"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"--code-object corpus=.*junk\.co: .*junk\.co is not a code object kfdtrace "
                                         r"loads: (not an ELF file|the offload bundle holds no AMDGPU code object)"):
        parse_code_object_options([f"corpus={path}"], None)


def test_unfit_names_a_kernel_an_object_lacks_or_whose_arguments_differ() -> None:
    data, fields = record(CORPUS_942)
    chosen = choose(data, fields, "gfx942", NONE)
    assert chosen is not None
    vector_add = chosen.code.kernels["vector_add"].metadata
    assert unfit("vector_add", vector_add, chosen.code) is None
    other = load((HERE / "fixtures" / "code_objects" / "args-gfx1100.co").read_bytes(), "gfx1100")
    assert unfit("vector_add", vector_add, other).startswith("it holds no kernel vector_add (it holds ")
    (name, kernel), *_ = other.kernels.items()
    assert unfit(name, vector_add, other) is not None  # another kernel's arguments under its name


def test_a_name_two_recorded_objects_go_by_selects_neither(tmp_path: Path) -> None:
    """Two builds of other contents recorded under one name (k.co from two folders, say): the name, as an option or
    as a file of the folder, would give both the same object, and the wrong kernel would run. It selects neither:
    the refusal asks for each by its key, which does select it."""
    data, a = record(CORPUS_942, name="k")
    other = CORPUS_942.read_bytes() + b"\0" * 64  # the same code, other contents: another key
    b = {**a, "key": blob_key(other)}
    (tmp_path / "k.gfx1100.co").write_bytes(CORPUS_1100.read_bytes())
    options = parse_code_object_options([], str(tmp_path)).for_records([a, b])
    assert options.ambiguous == {"k"}
    assert choose(data, a, "gfx1100", options) is None  # the folder's k.gfx1100.co is no longer taken for it
    message = missing_message("gfx1100", [(a, ["vector_add"]), (b, ["vector_add"])], options)
    assert f"give --code-object {a['key'].hex()[:8]}=PATH and --code-object {b['key'].hex()[:8]}=PATH" in message
    assert "k.gfx1100.co" not in message
    by_name = parse_code_object_options([f"k={CORPUS_1100}"], None).for_records([a, b])
    with pytest.raises(ValueError, match=r"2 recorded code objects of other contents are named 'k'; give each by "
                                         r"its key instead: --code-object [0-9a-f]{8}=PATH and"):
        check_options(by_name, [a, b])
    by_key = parse_code_object_options([f"{a['key'].hex()[:8]}={CORPUS_1100}"], None).for_records([a, b])
    check_options(by_key, [a, b])
    assert choose(data, a, "gfx1100", by_key).source.startswith("--code-object") and \
        choose(data, b, "gfx1100", by_key) is None
    assert parse_code_object_options([], str(tmp_path)).for_records([a, a]).ambiguous == frozenset()  # same object


def test_one_name_recorded_for_two_processors_is_one_programs_builds(tmp_path: Path) -> None:
    """Campaign 95: a program built for each GPU of a mixed machine (corpus.co for gfx942, and for gfx1100) left
    two objects of one name; the name was taken as ambiguous, and the folder's per-target builds were never used."""
    data_942, a = record(CORPUS_942, name="corpus")
    data_1100, b = record(CORPUS_1100, "gfx1100", name="corpus")
    (tmp_path / "corpus.gfx1201.co").write_bytes(BUNDLE.read_bytes())
    options = parse_code_object_options([], str(tmp_path)).for_records([a, b])
    assert options.ambiguous == frozenset()
    for data, fields in ((data_942, a), (data_1100, b)):
        assert choose(data, fields, "gfx1201", options).source.endswith("corpus.gfx1201.co")


def test_a_recorded_code_object_that_is_no_code_object_is_a_corrupt_trace(tmp_path):
    """The recording loaded it, so a blob that is no ELF now is the trace's fault: exit 4 (it was exit 3, as for
    an object the target cannot take)."""
    from tests.test_replay import replay, rewrite, sample

    bad = str(tmp_path / "bad.kfdtrace")

    def garbage(rec, reader, writer):
        if rec.type != "code_object":
            return rec.fields
        return {**rec.fields, "key": writer.blob(b"\x7fELF not a code object" * 64)}

    rewrite(sample("vector_add_aql-gfx942"), bad, garbage)
    res = replay(bad, "--emulate", "gfx942")
    assert res.returncode == 4 and "the recorded code object is not one" in res.stderr and \
        "(corrupt trace)" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
