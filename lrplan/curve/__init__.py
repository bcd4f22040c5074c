"""The curve model: loss curves under any LR schedule (fit, calibrate, predict)."""
