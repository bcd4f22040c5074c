"""The transfer model: the optimal LR across size, horizon and batch (fit, decide, next run)."""
