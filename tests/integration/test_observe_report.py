"""``hopline latency report`` (pipeline/observe/report.py) reading the latency and control topics."""

import json

import pytest

from pipeline.cli import main
from pipeline.clock import now_ms
from pipeline.kafka.clients import make_producer
from tests.plugins.broker import SettingsFactory
from tests.plugins.builders import control_command, latency_event

pytestmark = pytest.mark.integration


def event(ts_ms: float, queue_wait_ms: float, batch_size: int) -> bytes:
    return latency_event(queue_wait_ms, session_id=f"s{batch_size}", event_ts_ms=ts_ms, batch_size=batch_size).encode()


def test_report_reads_the_topics_filters_by_since_and_plots(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    settings = make_settings()
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    producer = make_producer(settings)
    now = now_ms()
    old = now - 30 * 60_000.0
    for i in range(20):
        producer.produce(settings.topics.latency, key=b"old", value=event(old + i, 900.0, 8))
    for i in range(40):
        producer.produce(settings.topics.latency, key=b"s", value=event(now - 5000 + 100 * i, 10.0 * i, 1 + i % 2))
    producer.produce(settings.topics.latency, key=b"s", value=b"garbage")
    decision = control_command(
        settings, 2, seq=1, reason="queue_wait p95 130 ms > 120 ms", metrics={"queue_wait_ms_p95": 130.0}
    )
    producer.produce(settings.topics.control, key=b"global", value=decision.encode())
    producer.flush(5)

    plot = tmp_path / "breakdown.png"
    assert main(["latency", "report", "--since", "10m", "--json", "--plot", str(plot)]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["events"] == 40, "the 30-minute-old events are outside --since"
    assert figures["batch_size_distribution"] == {"1": 20, "2": 20}
    assert figures["queue_wait_ms_p50"] == pytest.approx(195.0)
    assert figures["e2e_ms_p95"] == pytest.approx(209.0 + 370.5)
    assert [d["level"] for d in figures["decisions"]] == [2]
    assert figures["decisions"][0]["metrics"] == {"queue_wait_ms_p95": 130.0}
    assert plot.read_bytes().startswith(b"\x89PNG")

    assert main(["latency", "report", "--json", "--by", "session"]) == 0
    by_session = json.loads(capsys.readouterr().out)["by_session"]
    assert sorted(by_session) == ["s1", "s2", "s8"], "the 30-minute-old hops are all s8"
    assert by_session["s8"]["batch_size_mean"] == 8.0 and by_session["s8"]["queue_wait_ms_p95"] == 900.0

    assert main(["latency", "report", "--by", "worker"]) == 0
    text = capsys.readouterr().out
    assert "by worker:" in text
    assert "61 hops" not in text and "60 hops" in text
    assert "skipped 1 unreadable latency events" in text
    assert "level 2" in text
