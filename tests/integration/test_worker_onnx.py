"""``hopline worker`` with ``HOPLINE_WORKER__RECOGNIZER=onnx`` and a tiny random CTC model, end to end on
the real broker: every hop sent comes out as a hypothesis (nonsense text, right wiring and shapes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import contracts
from pipeline.supervisor import ServiceProcess
from tests.plugins.asr import TINY_TOKENS, export_tiny_ctc_model
from tests.plugins.broker import SettingsFactory
from tests.plugins.kafka import TopicReader
from workers.worker.bench import feed_sessions, speech_stream

pytestmark = pytest.mark.integration

WORKER_READY_S = 180.0
COLLECT_TIMEOUT_S = 90.0
SESSIONS = 3


def test_onnx_worker_turns_every_hop_into_a_hypothesis(make_settings: SettingsFactory, tmp_path: Path) -> None:
    model = export_tiny_ctc_model(tmp_path / "tiny", "waveform")
    settings = make_settings(
        partitions=2, worker={"recognizer": "onnx", "checkpoint": str(model), "device": "cpu", "max_batch_size": 4}
    )
    assert settings.to_env()["HOPLINE_WORKER__RECOGNIZER"] == "onnx"
    topics = settings.topics
    hypotheses = TopicReader(settings, {topics.hypotheses: contracts.Hypothesis})
    side = TopicReader(
        settings,
        {topics.dead_letter(topics.hops): contracts.DeadLetter, topics.capabilities: contracts.WorkerCapabilities},
    )
    speech, _source = speech_stream(16000)
    try:
        with ServiceProcess(settings, "worker", "--worker-id", "onnx-1") as worker:
            worker.wait_ready(WORKER_READY_S)
            sent = feed_sessions(settings, speech, "o-", sessions=SESSIONS, duration_s=1.6, seed=7)
            hypotheses.until(
                lambda records: len(records) + sum(r.skipped_before + r.strided_before for r in records) >= sent,
                timeout_s=COLLECT_TIMEOUT_S,
            )
            side.until(lambda records: len(records) >= 1, topic=topics.capabilities, timeout_s=COLLECT_TIMEOUT_S)
            assert worker.terminate() == 0
    finally:
        hypotheses.close()
        side.close()

    records = hypotheses.records(topics.hypotheses)
    assert len(records) + sum(r.skipped_before + r.strided_before for r in records) == sent
    assert {r.session_id for r in records} == {f"o-{i:03d}" for i in range(SESSIONS)}
    assert sum(r.is_final for r in records) == SESSIONS
    assert side.records(topics.dead_letter(topics.hops)) == [], "no hop was dead-lettered"
    (capabilities,) = side.records(topics.capabilities)
    assert capabilities.tiers == ("full",) and capabilities.device == "cpu"
    letters = set("".join(TINY_TOKENS[2:]))
    assert any(r.words for r in records), "the random model says something"
    for r in records:
        assert r.worker_id == "onnx-1"
        assert r.text == " ".join(w.word for w in r.words)
        assert all(set(w.word) <= letters for w in r.words), "the tiny model's tokens, not the lexicon's words"
        for word in r.words:
            assert r.window_start_ms <= word.start_ms < word.end_ms <= r.window_end_ms + 1e-6
            assert np.isfinite(word.confidence) and 0 < word.confidence <= 1
