"""Ingress: audio from gateways -> 20 ms frames on the frames topic, with admission control."""
