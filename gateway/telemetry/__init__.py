"""Traces, span export, metrics and the start-up report of fast paths."""
