"""Held-out evaluation: metrics, practitioners' baselines, backtests and simulation."""
