from kfdtrace.entry import kfdtrace

kfdtrace()
