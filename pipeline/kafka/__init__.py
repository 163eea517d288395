"""The one Kafka layer: client factories, readers, topics, dead letters, faust wiring, the embedded broker."""
