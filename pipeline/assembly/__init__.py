"""Assembly: hypotheses -> partial and final transcripts, and one latency event per hop."""
