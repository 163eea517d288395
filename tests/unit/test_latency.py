import random

from pipeline import contracts
from pipeline.observe.latency import COMPONENTS, FIGURES, components, latency_event


def hypothesis(base_ms: float = 1_795_000_000_000.0, **overrides: object) -> dict:
    """A hypothesis whose timestamps step through the pipeline by known amounts."""
    record = {
        "session_id": "s1",
        "hop_seq": 7,
        "text": "hello",
        "words": [{"word": "hello", "start_ms": 100.0, "end_ms": 400.0, "confidence": 0.9}],
        "confidence": 0.9,
        "window_start_ms": 0.0,
        "window_end_ms": 1280.0,
        "is_final": False,
        "beam": 4,
        "window_secs": 1.28,
        "batch_size": 3,
        "control_level": 1,
        "worker_id": "w1",
        "first_capture_ts_ms": base_ms,
        "ready_ts_ms": base_ms + 160.0,
        "hop_published_ts_ms": base_ms + 162.5,
        "received_ts_ms": base_ms + 170.0,
        "batch_closed_ts_ms": base_ms + 185.0,
        "infer_start_ts_ms": base_ms + 190.0,
        "infer_end_ts_ms": base_ms + 240.0,
        "skipped_before": 0,
    }
    record.update(overrides)
    return record


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
    published = hyp["infer_end_ts_ms"] + 3.0
    event = latency_event(hyp, published, emitted=False)
    assert contracts.LATENCY.decode(contracts.LATENCY.encode(event)) == event
    assert event["event_ts_ms"] == published
    assert event["post_ms"] == 3.0
    assert (event["batch_size"], event["beam"], event["window_secs"], event["control_level"]) == (3, 4, 1.28, 1)
    assert (event["worker_id"], event["session_id"], event["hop_seq"], event["emitted"]) == ("w1", "s1", 7, False)
    assert all(name in event for name in FIGURES)
