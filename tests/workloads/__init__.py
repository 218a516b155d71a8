"""SDMA workloads for the permanent test matrix (tests/test_workloads.py, tests/test_stress.py).

Each module has `run(system)`, `GPUS` and `main()`; `ALL` lists them in matrix order. Run one by itself with
`KFDTRACE_EMULATE=gfx1100 python tests/workloads/large_writes.py`.
"""

ALL = [
    "large_writes",
    "many_small_buffers",
    "writes_between_copies",
    "semaphore_wrap",
    "event_ping_pong",
    "userptr",
    "alloc_churn",
    "queue_recreate",
    "threads",
    "inflight_at_wait",
    "peer_copy",
    "vram_exhaustion",
    "ring_wrap",
    "timestamps",
    "fill_patterns",
]
