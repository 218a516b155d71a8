"""Which code object a replay loads for each recorded one, on its device's target.

A trace's `code_object` record keeps the object as the program gave it (an ELF, or an offload bundle), its
target, its kernels and its name. Replayed on another GPU family, the recorded ELF does not run: the replay takes
the bundle's entry for the device, or an object the user gives:

    options = parse_code_object_options(["corpus=build/corpus.gfx1100.co"], "build/")   # --code-object, --code-objects
    choice = choose(recorded_bytes, record_fields, "gfx1100", options)                  # None: nothing fits
    why = unfit(kernel_name, recorded_metadata, choice.code)                          # None: it runs the kernel

Precedence: a --code-object naming the object (a user may replace it even on its own target), then the recorded
object or its bundle's entry for the device, then `<name>.<gfx>.co`, `<name>.hipfb` or `<name>.co` in the
--code-objects folder. Whether an object fits the device is code_object.load's answer: the processors match and no
xnack/sramecc setting disagrees (code_object_bundle.TargetId).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from kfdtrace.driver.code_object_bundle import entries, is_bundle, select
from kfdtrace.driver.code_object_errors import BadCodeObject, CodeObjectError

if TYPE_CHECKING:  # pyelftools loads with the first code object: a replay without kernels starts without it
    from kfdtrace.driver.code_object import CodeObject
    from kfdtrace.driver.code_object_metadata import KernelMetadata

__all__ = ["Choice", "CodeObjectOptions", "GivenObject", "check_options", "choose", "missing_message",
           "parse_code_object_options", "unfit", "unfit_message"]

HASH_PREFIX = re.compile(r"[0-9a-fA-F]{8,32}")  # 8 or more hex digits of a blob key (16 bytes: 32 digits)
SHOWN_DIGITS = 8  # hex digits of a key a message shows
USAGE = ("give NAME_OR_HASH=PATH: a recorded code object's name or 8 or more hex digits of its key, then an ELF "
         "code object or an offload bundle")


@dataclass(frozen=True)
class GivenObject:
    """One --code-object: what it selects (a recorded object's name or a key prefix), the file and its bytes."""

    selector: str
    path: str
    data: bytes

    @property
    def option(self) -> str:
        return f"--code-object {self.selector}={self.path}"

    def selects(self, fields: Mapping[str, Any], ambiguous: frozenset[str] = frozenset()) -> bool:
        """Whether this option names the object of the `code_object` record `fields` (a name that `ambiguous`
        holds, several objects' name, names none of them)."""
        if fields.get("name") == self.selector and self.selector not in ambiguous:
            return True
        return bool(HASH_PREFIX.fullmatch(self.selector)) and fields["key"].hex().startswith(self.selector.lower())


@dataclass(frozen=True)
class CodeObjectOptions:
    """The code objects a user gives a replay: --code-object NAME_OR_HASH=PATH options and a --code-objects DIR."""

    given: tuple[GivenObject, ...] = ()
    directory: str | None = None
    ambiguous: frozenset[str] = frozenset()  # names several recorded objects (of other contents) go by

    def for_records(self, records: Iterable[Mapping[str, Any]]) -> CodeObjectOptions:
        """These options for a trace recording the objects of the `code_object` records `records`: a name two of
        them for one processor go by (two builds named k.co, say) selects neither, as an option or as a file of
        the folder. Objects of one name for different processors (a program built for each GPU of a mixed
        machine: campaign 95) are taken for builds of one program, as `<name>.<gfx>.co` files are."""
        keys: dict[tuple[str, str], set[bytes]] = {}
        for f in records:
            if f.get("name"):
                keys.setdefault((f["name"], _processor(str(f.get("target")))), set()).add(f["key"])
        return replace(self, ambiguous=frozenset(n for (n, _), k in keys.items() if len(k) > 1))


@dataclass(frozen=True)
class Choice:
    """The bytes a replay loads for a recorded object, the object they give on the device, and where they came
    from: "recorded", "recorded bundle", "--code-object NAME=PATH" or the file in the --code-objects folder."""

    data: bytes
    code: CodeObject
    source: str


def parse_code_object_options(pairs: Sequence[str], directory: str | None) -> CodeObjectOptions:
    """The options `--code-object NAME_OR_HASH=PATH` (each of `pairs`) and `--code-objects DIR`, their files read
    and checked to be code objects; ValueError naming the option at fault."""
    given = []
    for pair in pairs:
        selector, sep, path = pair.partition("=")
        if not sep or not selector or not path:
            raise ValueError(f"--code-object {pair!r}: {USAGE}")
        option = f"--code-object {pair}"
        data = _read(path)
        if isinstance(data, str):
            raise ValueError(f"{option}: {data}") from None
        try:
            _check_code_object(data)
        except CodeObjectError as e:
            raise ValueError(f"{option}: {path} is not a code object kfdtrace loads: {e}") from None
        given.append(GivenObject(selector, path, data))
    if directory is not None and not os.path.isdir(directory):
        raise ValueError(f"--code-objects {directory}: no such folder; give the folder holding <name>.<gfx>.co files")
    return CodeObjectOptions(tuple(given), directory)


def check_options(options: CodeObjectOptions, records: Iterable[Mapping[str, Any]]) -> None:
    """ValueError for a --code-object that selects none of the recorded objects (`code_object` record fields),
    listing those there are: a misspelt name would otherwise be ignored."""
    records = list(records)
    for g in options.given:
        if g.selector in options.ambiguous:
            named = sorted({_key(f) for f in records if f.get("name") == g.selector})
            keys = [f"--code-object {k}=PATH" for k in named]
            raise ValueError(f"{g.option}: {len(keys)} recorded code objects of other contents are named "
                             f"{g.selector!r}; give each by its key instead: {_and(keys)}")
        if not any(g.selects(f) for f in records):
            have = ", ".join(_object(f) for f in records) or "none"
            raise ValueError(f"{g.option}: no recorded code object is named {g.selector!r} or has a key starting "
                             f"with it; the trace's objects: {have}")


def choose(recorded: bytes, fields: Mapping[str, Any], target: str, options: CodeObjectOptions) -> Choice | None:
    """The code object to load for the recorded one (`recorded`, its bytes; `fields`, its `code_object` record) on
    a device of `target` ("gfx1100"), by the module's precedence; None when none loads there."""
    for g in options.given:
        if g.selects(fields, options.ambiguous) and not isinstance(code := _loaded(g.data, target), str):
            return Choice(g.data, code, g.option)
    if not isinstance(code := _loaded(recorded, target), str):
        if is_bundle(recorded) and _processor(fields["target"]) != _processor(target):
            return Choice(select(recorded, target), code, "recorded bundle")
        return Choice(recorded, code, "recorded")
    for path in _folder_files(fields, target, options):
        got = _loaded_file(path, target)
        if not isinstance(got, str):
            return Choice(*got, path)
    return None


def unfit(name: str, recorded: KernelMetadata, chosen: CodeObject) -> str | None:
    """Why `chosen` cannot run the dispatches of kernel `name` recorded with `recorded`'s arguments: it lacks the
    kernel, or the kernel's arguments differ in kind or size; None when it can."""
    from kfdtrace.driver.kernargs import KernargError, matched

    kernel = chosen.kernels.get(name)
    if kernel is None:
        return f"it holds no kernel {name} (it holds {_and(sorted(chosen.kernels)) if chosen.kernels else 'none'})"
    try:
        matched(recorded, kernel.metadata)
    except KernargError as exc:
        return str(exc)
    return None


def unfit_message(target: str, fields: Mapping[str, Any], source: str, why: str) -> str:
    """One line refusing a replay on `target` whose object for the recorded one (`fields`) from `source` does not
    fit a dispatch (`why`, from `unfit`)."""
    return f"the code object for {target} in place of {_object(fields)} ({source}) does not fit: {why}"


def missing_message(target: str, missing: Sequence[tuple[Mapping[str, Any], Sequence[str]]],
                    options: CodeObjectOptions) -> str:
    """One line refusing a replay on `target` for want of code objects: `missing` holds each recorded object
    without one (its `code_object` record fields) with the kernels that need it. It says how to give each, and why
    the user's files that were tried do not fit."""
    processor = _processor(target)
    needs, give, files, tried = [], [], [], []
    for fields, kernels in missing:
        noun = "kernel" if len(kernels) == 1 else "kernels"
        needs.append(f"{noun} {', '.join(kernels)} (recorded for {fields['target']} in {_object(fields)})")
        name = fields.get("name") if fields.get("name") not in options.ambiguous else None  # by its key, then
        option = f"--code-object {name or _key(fields)}=PATH"
        if option not in give:
            give.append(option)
        if name and _plain(name) and f"{name}.{processor}.co" not in files:
            files.append(f"{name}.{processor}.co")
        tried += [f"{g.option} does not fit ({why})" for g in options.given
                  if g.selects(fields, options.ambiguous) and isinstance(why := _loaded(g.data, target), str)]
        tried += [f"{p} does not fit ({why})" for p in _folder_files(fields, target, options)
                  if isinstance(why := _loaded_file(p, target), str)]
    verb = "needs" if len(needs) == 1 and len(missing[0][1]) == 1 else "need"
    line = (f"no code object for {target}: {_and(needs)} {verb} one; give {_and(give)}"
            + (f" or --code-objects DIR with {', '.join(files)}" if files else ""))
    return line + "".join(f"; {t}" for t in tried)


def _check_code_object(data: bytes) -> None:
    """CodeObjectError unless `data` is an ELF code object or an offload bundle of them."""
    from kfdtrace.driver.code_object import CodeObject

    if not is_bundle(data):
        CodeObject.parse(data)
        return
    members = [e for e in entries(data) if e.target is not None and e.data]
    if not members:
        raise BadCodeObject("the offload bundle holds no AMDGPU code object")
    for e in members:
        CodeObject.parse(e.data)


def _loaded(data: bytes, target: str) -> CodeObject | str:
    """The code object `data` gives on `target`, or why it gives none."""
    from kfdtrace.driver.code_object import load

    try:
        return load(data, target)
    except CodeObjectError as e:
        return str(e)


def _read(path: str) -> bytes | str:
    """The bytes of a code object file, or why they are not read (`code_object.read_file`)."""
    from kfdtrace.driver.code_object import read_file

    try:
        return read_file(path)
    except CodeObjectError as e:
        return str(e)


def _loaded_file(path: str, target: str) -> tuple[bytes, CodeObject] | str:
    """The bytes of the file at `path` and the code object they give on `target`, or why not."""
    data = _read(path)
    if isinstance(data, str):
        return data
    code = _loaded(data, target)
    return code if isinstance(code, str) else (data, code)


def _folder_files(fields: Mapping[str, Any], target: str, options: CodeObjectOptions) -> list[str]:
    """The files of the --code-objects folder that may stand for the recorded object, by precedence: those there
    are of `<name>.<gfx>.co`, `<name>.hipfb`, `<name>.co`."""
    name = fields.get("name")
    if options.directory is None or not name or not _plain(name) or name in options.ambiguous:
        return []
    names = (f"{name}.{_processor(target)}.co", f"{name}.hipfb", f"{name}.co")
    return [p for n in names if os.path.isfile(p := os.path.join(options.directory, n))]


def _plain(name: str) -> bool:
    """Whether a recorded name (from an untrusted trace) can name a file in the folder and nothing outside it."""
    return name not in (".", "..") and not any(c in name for c in "/\\\0")


def _processor(target: str) -> str:
    """The processor of a target id ("gfx90a" of "gfx90a:xnack-"), as TargetId and target_by_name read it."""
    return target.strip().split(":", 1)[0].lower()


def _key(fields: Mapping[str, Any]) -> str:
    return fields["key"].hex()[:SHOWN_DIGITS]


def _object(fields: Mapping[str, Any]) -> str:
    name = fields.get("name")
    return f"object {name!r} {_key(fields)}..." if name else f"an unnamed object {_key(fields)}..."


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
