"""kfdtrace.capture"""
