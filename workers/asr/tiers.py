"""Model tiers of ``Recognizer.transcribe``: torch-free, so the CLIs can offer them as choices."""

TIER_FULL = "full"
TIER_INT8 = "int8"
TIERS = (TIER_FULL, TIER_INT8)
