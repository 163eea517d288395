"""The GPU worker: hops in, micro-batched recognition, hypotheses out (at-least-once)."""
