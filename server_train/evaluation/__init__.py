"""Evaluation on synthetic and real data, and speed benchmarks (all write JSON)."""
