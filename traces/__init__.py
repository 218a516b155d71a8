"""kfdtrace.traces: the trace format (reader and writer), its tools, and sample traces."""
