"""Structure-aware fuzzing of traces (issue 8): `mutate` makes hostile traces from the samples, `campaign` runs
many of them; tests/test_fuzz.py runs a bounded number in the suite."""
