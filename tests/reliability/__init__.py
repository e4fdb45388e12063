"""Reliability tests (issue 6): fuzzing, load, hot reload, training faults, security, shutdown."""
