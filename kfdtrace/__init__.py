"""kfdtrace: record, carry and replay what a program asks of an AMD GPU."""

__version__ = "0.1.0"
