"""The recognizer's training lab: corpus synthesis, LM, training, evaluation (never imported at run time)."""
