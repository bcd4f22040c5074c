"""Compute-optimal size for a FLOP budget (the Chinchilla-style loss law fitted with NUTS)."""
