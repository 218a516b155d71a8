"""kfdtrace.traces"""
