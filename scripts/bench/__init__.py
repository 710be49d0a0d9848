"""Helpers of scripts/bench_gateway.py (fake upstream, naive proxy, load generation, reports)."""
