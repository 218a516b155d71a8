"""Regenerate the sample traces from examples/ on the emulator: python traces/samples/regenerate.py

Each sample is small on purpose (a few hundred KB at most): tests, the README and replay use them.
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "..", "examples")

# name: (example script, emulated GPUs, workload arguments)
SAMPLES = {
    "sdma_stress-gfx942": ("sdma_stress.py", "gfx942", ["--rounds", "16", "--batch", "4", "--size", "4096"]),
    "peer_ring-2xgfx942": ("peer_ring.py", "gfx942,gfx942", ["--laps", "3", "--size", "16384"]),
    "ping_pong-gfx1100": ("ping_pong.py", "gfx1100", ["--rounds", "16"]),
    # a kernel dispatch, from the multi-target bundle so that it replays on every family
    "vector_add_aql-gfx942": ("vector_add.py", "gfx942", ["--n", "4096", "--aql", "--bundle"]),
}


def main() -> None:
    for name, (script, targets, args) in SAMPLES.items():
        out = os.path.join(HERE, f"{name}.kfdtrace")
        cmd = [sys.executable, "-m", "kfdtrace.capture.cli", "run", "--emulate", targets, "--name", name,
               "-o", out, os.path.join(EXAMPLES, script), *args]
        subprocess.run(cmd, check=True)
        print(f"{out}: {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
