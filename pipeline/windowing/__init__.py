"""Windowing: 20 ms frames -> one 160 ms hop over the rolling 0.96-1.28 s window."""
