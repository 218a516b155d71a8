"""What `replay`'s exit status says, from best to worst (replay/cli.py's docstring words each): one table for the
engine, the CLI and `replay campaign`, importable without the engine."""

EXIT_OK, EXIT_DIVERGED, EXIT_HANG, EXIT_UNSUPPORTED, EXIT_BAD_INPUT, EXIT_INTERNAL = range(6)
VERDICTS = ("ok", "diverged", "hang", "cannot run", "bad input", "internal")  # by exit status
