"""kfdtrace.replay"""
