"""The latency accounting (pipeline/observe/latency.py): components, events, measures."""

import random
from typing import Any

from pipeline import contracts
from pipeline.observe.latency import COMPONENTS, MEASURES, components, latency_event, measures
from tests.plugins import builders

#: Hop 7's timestamps, from the capture of its first frame.
STEPS_MS = {
    "ready_ts_ms": 160.0,
    "hop_published_ts_ms": 162.5,
    "received_ts_ms": 170.0,
    "batch_closed_ts_ms": 185.0,
    "infer_start_ts_ms": 190.0,
    "infer_end_ts_ms": 240.0,
}


def hypothesis(base_ms: float = 1_795_000_000_000.0, **overrides: object) -> contracts.Hypothesis:
    """Hop 7 saying "hello", whose timestamps step through the pipeline from ``base_ms`` by :data:`STEPS_MS`."""
    fields: dict[str, Any] = {"first_capture_ts_ms": base_ms, **overrides}
    return builders.hypothesis(
        "s1",
        7,
        speech=[("hello", 100.0, 400.0)],
        steps_ms=STEPS_MS,
        batch_size=3,
        control_level=1,
        worker_id="w1",
        **fields,
    )


def test_components_follow_the_accounting_definitions() -> None:
    hyp = hypothesis(base_ms=1000.0)
    figures = components(hyp, transcript_published_ts_ms=1000.0 + 252.0)
    assert figures == {
        "hop_buffer_ms": 160.0,
        "net_ms": 2.5,
        "queue_wait_ms": 7.5 + 5.0,
        "batch_wait_ms": 15.0,
        "gpu_infer_ms": 50.0,
        "post_ms": 12.0,
        "e2e_ms": 252.0,
    }


def test_components_add_up_to_e2e_exactly_for_epoch_timestamps() -> None:
    rng = random.Random(5)
    for _ in range(500):
        stamps = [1_795_000_000_000.0 + rng.uniform(0, 5_000)]
        for _ in range(7):
            stamps.append(stamps[-1] + rng.uniform(0, 300))
        hyp = hypothesis(
            first_capture_ts_ms=stamps[0],
            ready_ts_ms=stamps[1],
            hop_published_ts_ms=stamps[2],
            received_ts_ms=stamps[3],
            batch_closed_ts_ms=stamps[4],
            infer_start_ts_ms=stamps[5],
            infer_end_ts_ms=stamps[6],
        )
        figures = components(hyp, stamps[7])
        assert sum(figures[f"{name}_ms"] for name in COMPONENTS) == figures["e2e_ms"]
        assert figures["e2e_ms"] == stamps[7] - stamps[0]


def test_clock_skew_shows_as_a_negative_component_not_a_broken_sum() -> None:
    base = 1_795_000_000_000.0
    hyp = hypothesis(base_ms=base, received_ts_ms=base + 150.0)  # worker clock behind the windower's
    figures = components(hyp, base + 300.0)
    assert figures["queue_wait_ms"] < 0
    assert sum(figures[f"{name}_ms"] for name in COMPONENTS) == figures["e2e_ms"] == 300.0


def test_latency_event_carries_the_hops_context_and_encodes() -> None:
    hyp = hypothesis()
    published = hyp.infer_end_ts_ms + 3.0
    event = latency_event(hyp, published, emitted=False)
    assert contracts.LatencyEvent.decode(event.encode()) == event
    assert event.event_ts_ms == published
    assert event.post_ms == 3.0
    assert (event.batch_size, event.beam, event.window_secs, event.control_level) == (3, 4, 1.28, 1)
    assert (event.worker_id, event.session_id, event.hop_seq, event.emitted) == ("w1", "s1", 7, False)
    figures = components(hyp, published)
    assert measures(event) == {name: figures[f"{name}_ms"] for name in MEASURES}
    assert list(measures(event)) == list(MEASURES)
