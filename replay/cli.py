"""The `replay` command (thin until its issue lands)."""

from kfdtrace.cli import pending_command

main = pending_command("replay")
