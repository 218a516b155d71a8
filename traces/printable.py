"""Untrusted text (a trace's names, notes, paths; error messages quoting them) as a terminal may be shown it:
control characters escaped, so that a trace cannot move the cursor, retitle the window or fake a line."""

from __future__ import annotations

# C0 and C1 controls and DEL, newlines and tabs included: shown as \xNN
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(line: str) -> str:
    """`line` with every control character escaped."""
    return line if line.isprintable() else line.translate(_CONTROLS)


def one_line(text: object) -> str:
    """`text` as one printable line: runs of whitespace (newlines included) as one space."""
    return printable(" ".join(str(text).split()))
