"""kfdtrace.capture: record everything a workload asks of the GPU into one trace."""

from kfdtrace.capture.session import record

__all__ = ["record"]
