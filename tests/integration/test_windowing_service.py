"""The windower (pipeline/windowing/service.py) as a real child process against the embedded broker."""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict

import numpy as np
import pytest

from pipeline import audio, contracts
from pipeline.clock import now_ms
from pipeline.ingress.service import AudioProducer, AudioStream
from pipeline.kafka.clients import make_producer
from pipeline.supervisor import ServiceProcess
from tests.plugins.broker import SettingsFactory
from tests.plugins.builders import control_command, frame
from tests.plugins.kafka import TopicReader, scrape_metrics

pytestmark = pytest.mark.integration

SPF = 320  # 16 kHz samples per 20 ms frame
WINDOW = 20480  # 1.28 s at 16 kHz


def hops_by_session(hops: list[contracts.Hop]) -> dict[str, list[contracts.Hop]]:
    grouped: dict[str, list[contracts.Hop]] = defaultdict(list)
    for hop in hops:
        grouped[hop.session_id].append(hop)
    return grouped


def finals(hops: list[contracts.Hop]) -> int:
    return sum(hop.is_final for hop in hops)


def speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * (180 + 40 * seed) * t) * 6000 + rng.standard_normal(len(t)) * 800
    return np.round(tone).astype(np.int16)


def expected_stream(stream: AudioStream) -> np.ndarray:
    """The documented decode/resample of what the producer sends: 16 kHz PCM16, frames padded."""
    per_frame = stream.sample_rate // 50
    payloads = [audio.encode(f, stream.codec) for f in audio.frames_of(stream.samples, per_frame)]
    decoded = audio.decode(b"".join(payloads), stream.codec)
    return audio.upsample_8k_to_16k(decoded) if stream.sample_rate == 8000 else decoded


def assert_hops_match(
    stream: AudioStream, hops: list[contracts.Hop], redelivered: bool = False, window_samples: int = WINDOW
) -> None:
    """Exactly the hops the documented decode/resample gives; ``redelivered``: frames may come twice."""
    expected = expected_stream(stream)
    frames = len(expected) // SPF
    assert [h.hop_seq for h in hops] == list(range(frames // 8 + 1))
    assert [h.is_final for h in hops] == [False] * (frames // 8) + [True]
    for hop in hops:
        end = min((hop.hop_seq + 1) * 8, frames) * SPF
        start = max(0, end - window_samples)
        assert hop.window_start_sample == start
        window = audio.pcm16_from_bytes(hop.audio)
        differ = np.flatnonzero(window != expected[start:end]) if len(window) == end - start else [-1]
        assert len(differ) == 0, (
            f"{stream.session_id} hop {hop.hop_seq}: samples {differ[:3]}..{differ[-1:]} differ "
            f"(gap frames {hop.gap_frames}, duplicates {hop.duplicate_frames}, "
            f"differing samples all silence: {len(window) == end - start and not window[differ].any()})"
        )
        assert hop.gap_frames == 0
        assert redelivered or hop.duplicate_frames == 0
        assert hop.sample_rate == 16000
        # ready is the windower's receive time, published its send time: one clock, in that order.
        assert hop.first_capture_ts_ms <= hop.ready_ts_ms <= hop.published_ts_ms


def test_three_interleaved_sessions_become_exactly_the_expected_hops(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    streams = [
        AudioStream("pcm-a", speech_like(1.5, 16000, 1)),
        AudioStream("phone-b", speech_like(1.7, 8000, 2), "mulaw", 8000),
        AudioStream("pcm-c", speech_like(0.64, 16000, 3)),  # 32 frames: the final hop carries no new audio
    ]
    hops_reader = TopicReader(settings, {settings.topics.hops: contracts.Hop})
    with ServiceProcess(settings, "windower") as windower:
        windower.wait_ready()
        producer = AudioProducer(settings)
        producer.stream_many(streams)
        report = producer.close()
        assert report.failed == 0 and report.pending == 0
        hops = hops_reader.until(lambda got: finals(got) == 3)
        assert windower.terminate() == 0
    hops_reader.close()
    grouped = hops_by_session(hops)
    assert set(grouped) == {"pcm-a", "phone-b", "pcm-c"}
    for stream in streams:
        assert_hops_match(stream, grouped[stream.session_id])


def labelled_sample(metrics: str, name: str, label: str) -> float:
    """The value of ``name{label}`` in a ``/metrics`` text, 0 if absent."""
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(label)}\}} (\S+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_hop_timing_is_the_windowers_clock_whatever_the_clients(make_settings: SettingsFactory) -> None:
    """Captures NaN, at the epoch, or from a clock 300 ms behind: hops as usual, timed by the windower."""
    settings = make_settings(metrics={"enabled": True})
    stream = AudioStream("acme/clockless", speech_like(0.64, 16000, 8))  # 32 frames, then end of stream

    def capture(seq: int) -> float:
        return (math.nan, 0.0, now_ms() - 300, now_ms() - 300)[seq % 4]

    hops_reader = TopicReader(settings, {settings.topics.hops: contracts.Hop})
    with ServiceProcess(settings, "windower") as windower:
        windower.wait_ready()
        producer = AudioProducer(settings)
        payloads = producer.frames_of(stream)
        sent_from = now_ms()
        for seq, payload in enumerate(payloads):
            producer.send_frame(stream, seq, payload, capture(seq))
        producer.send_frame(stream, len(payloads), b"", capture(len(payloads)), eos=True)
        producer.close()
        hops = hops_reader.until(lambda got: finals(got) == 1)
        metrics = scrape_metrics(windower.output)
        assert windower.terminate() == 0
    hops_reader.close()
    assert_hops_match(stream, hops)
    for hop in hops:
        assert sent_from <= hop.ready_ts_ms <= hop.published_ts_ms
        # Hops start with a NaN capture, clamped to its arrival (the final one holds no new audio): never the epoch.
        assert math.isfinite(hop.first_capture_ts_ms) and hop.ready_ts_ms - hop.first_capture_ts_ms < 2000
    clamped = "hopline_windower_capture_clamped_total"
    assert labelled_sample(metrics, clamped, 'reason="nan"') == 9  # seqs 0, 4, ..., 32
    assert labelled_sample(metrics, clamped, 'reason="too_old"') == 8
    assert labelled_sample(metrics, clamped, 'reason="future"') == 0
    skew = "hopline_windower_capture_skew_seconds"
    count = labelled_sample(metrics, f"{skew}_count", 'producer="acme"')
    assert count == 16
    assert 0.28 <= labelled_sample(metrics, f"{skew}_sum", 'producer="acme"') / count < 2.0  # 300 ms - 20 + transport


def test_invalid_frames_go_to_the_dead_letter_topic_and_good_sessions_go_on(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    good = AudioStream("good", speech_like(0.5, 16000, 4))
    bad = {
        b"garbage": "not an Avro single-object message",
        frame("bad-size", 0, payload=b"\x00" * 100).encode(): "payload is 100 bytes",
        frame("bad-rate", 0, payload=b"\x00" * 640, sample_rate=44100).encode(): "sample rate 44100",
        frame("good", 3, payload=b"\xff" * 160, codec="mulaw", sample_rate=8000).encode(): "changed mid-session",
    }
    dlq_topic = settings.topics.dead_letter(settings.topics.frames)
    hops_reader = TopicReader(settings, {settings.topics.hops: contracts.Hop})
    dlq_reader = TopicReader(settings, {dlq_topic: contracts.DeadLetter})
    with ServiceProcess(settings, "windower") as windower:
        windower.wait_ready()
        producer = AudioProducer(settings)
        raw = make_producer(settings)
        payloads = producer.frames_of(good)
        start = now_ms()
        for seq, payload in enumerate(payloads):
            producer.send_frame(good, seq, payload, start + 20 * seq)
            if seq == 2:
                assert producer.flush() == 0  # the session starts as pcm16 before the bad frames come
                for value in bad:
                    raw.produce(settings.topics.frames, key=b"good", value=value)
                raw.flush(5)
        producer.send_frame(good, len(payloads), b"", start + 20 * len(payloads), eos=True)
        producer.close()
        dead = dlq_reader.until(lambda got: len(got) == len(bad))
        hops = hops_reader.until(lambda got: finals(got) == 1)
        assert windower.terminate() == 0
    hops_reader.close()
    dlq_reader.close()
    assert {d.value: d.reason for d in dead}.keys() == bad.keys()
    for record in dead:
        assert bad[record.value] in record.reason
        assert record.source_topic == settings.topics.frames and record.service == "windower"
    assert_hops_match(good, hops_by_session(hops)["good"])


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_a_restarted_windower_continues_without_losing_or_repeating_a_hop(
    make_settings: SettingsFactory, stop: str
) -> None:
    """SIGTERM: exactly the hops. SIGKILL (a crash): no hop lost; a hop sent again is the same hop."""
    settings = make_settings()
    streams = [
        AudioStream("r-pcm", speech_like(2.0, 16000, 5)),
        AudioStream("r-phone", speech_like(2.0, 8000, 6), "alaw", 8000),
    ]
    producer = AudioProducer(settings)
    payloads = {s.session_id: producer.frames_of(s) for s in streams}
    cut = 45  # mid-hop: frames 40..44 are buffered in the windower when it stops
    hops_reader = TopicReader(settings, {settings.topics.hops: contracts.Hop})
    start = now_ms()

    def send(seqs: range) -> None:
        for seq in seqs:
            for stream in streams:
                last = seq == len(payloads[stream.session_id])
                payload = b"" if last else payloads[stream.session_id][seq]
                producer.send_frame(stream, seq, payload, start + 20 * seq, eos=last)
        producer.close()

    with ServiceProcess(settings, "windower") as first:
        first.wait_ready()
        send(range(cut))
        hops_reader.until(lambda got: len(got) == 2 * (cut // 8))
        if stop == "sigterm":
            assert first.terminate() == 0
        else:
            time.sleep(1.0)  # past a commit and a state write of the buffered frames, or not: either is fine
            first.kill()
    with ServiceProcess(settings, "windower") as second:
        second.wait_ready()
        assert "restored session" in second.output, second.output[-6000:]
        send(range(cut, 101))
        hops = hops_reader.until(lambda got: len({(h.session_id, h.hop_seq) for h in got if h.is_final}) == 2)
        assert second.terminate() == 0
    hops_reader.close()
    for session_id, session_hops in hops_by_session(hops).items():
        unique: dict[int, contracts.Hop] = {}
        for hop in session_hops:
            again = unique.setdefault(hop.hop_seq, hop)
            assert again.audio == hop.audio and again.window_start_sample == hop.window_start_sample
        if stop == "sigterm":
            assert len(unique) == len(session_hops), f"{session_id}: a hop was repeated"
        stream = next(s for s in streams if s.session_id == session_id)
        # Frames after the last commit come again after the restart and are dropped as duplicates.
        assert_hops_match(stream, [unique[seq] for seq in sorted(unique)], redelivered=True)


def test_the_window_follows_the_control_topic(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    command = control_command(settings, 2)  # window shrunk to 0.96 s
    control = make_producer(settings)
    control.produce(settings.topics.control, key=b"global", value=command.encode())
    control.flush(5)
    stream = AudioStream("short-window", speech_like(1.5, 16000, 7))
    hops_reader = TopicReader(settings, {settings.topics.hops: contracts.Hop})
    with ServiceProcess(settings, "windower") as windower:
        windower.wait_ready()
        producer = AudioProducer(settings)
        producer.stream(stream)
        producer.close()
        hops = hops_reader.until(lambda got: finals(got) == 1)
        assert windower.terminate() == 0
    hops_reader.close()
    assert {(h.window_secs, h.control_level) for h in hops} == {(0.96, 2)}
    assert_hops_match(stream, hops, window_samples=15360)
