"""Download the newest Debian kernel's linux-libc-dev (bookworm-backports), check its SHA-256 against the
archive's index, unpack it into DIR and print the path of its kfd_ioctl.h: the KFD ABI test checks the ioctl
table against it as well as against the installed header.

    python3 .ci/newest_kfd_header.py DIR
"""

from __future__ import annotations

import hashlib
import lzma
import subprocess
import sys
import urllib.request
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
INDEX = f"{MIRROR}/dists/bookworm-backports/main/binary-amd64/Packages.xz"


def newest_entry(index: str, package: str) -> dict[str, str]:
    """The index stanza of `package` (the first one: an index lists one version per suite)."""
    for stanza in index.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Package") == package:
            return fields
    raise SystemExit(f"{INDEX} lists no {package}")


def main() -> None:
    out = Path(sys.argv[1])
    with urllib.request.urlopen(INDEX, timeout=60) as r:
        entry = newest_entry(lzma.decompress(r.read()).decode(), "linux-libc-dev")
    with urllib.request.urlopen(f"{MIRROR}/{entry['Filename']}", timeout=120) as r:
        deb = r.read()
    if hashlib.sha256(deb).hexdigest() != entry["SHA256"]:
        raise SystemExit(f"{entry['Filename']}: SHA-256 differs from the index")
    out.mkdir(parents=True, exist_ok=True)
    (out / "linux-libc-dev.deb").write_bytes(deb)
    subprocess.run(["dpkg-deb", "-x", str(out / "linux-libc-dev.deb"), str(out)], check=True)
    header = out / "usr/include/linux/kfd_ioctl.h"
    if not header.is_file():
        raise SystemExit(f"linux-libc-dev {entry['Version']} has no kfd_ioctl.h")
    print(header)


if __name__ == "__main__":
    main()
