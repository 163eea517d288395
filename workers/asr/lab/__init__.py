"""workers.asr.lab."""
