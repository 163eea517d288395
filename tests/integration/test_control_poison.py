"""Poison control commands on the real broker: followers keep the good knobs, the bad record goes to the dlq.

The poison is written straight to the control topic with the contract's own encoder, as anyone holding
the schema could: nothing on the way stops a NaN window or a beam the recognizer has no decoder for.
"""

from __future__ import annotations

import math
import threading
import uuid
from dataclasses import replace

import pytest

from pipeline import contracts
from pipeline.control.follower import ControlFollower
from pipeline.control.ladder import ladder
from pipeline.control.service import resume_point
from pipeline.demo.service import load_samples, plan_sessions, stream_sessions
from pipeline.ingress.service import AudioProducer
from pipeline.kafka.clients import make_producer
from pipeline.observe.wer import wer
from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess, stop_all
from tests.plugins.broker import SettingsFactory
from tests.plugins.builders import control_command
from tests.plugins.kafka import TopicReader, read_all, wait_for

pytestmark = pytest.mark.integration

#: As in test_pipeline: the engine's documented WER bound on held-out speech.
ENGINE_HELD_OUT_WER = 0.10


def publish(settings: Settings, *commands: contracts.ControlCommand | bytes) -> None:
    producer = make_producer(settings)
    for command in commands:
        value = command if isinstance(command, bytes) else command.encode()
        producer.produce(settings.topics.control, key=b"global", value=value)
    assert producer.flush(10) == 0


def dead_letters(settings: Settings) -> list[contracts.DeadLetter]:
    return read_all(settings, settings.topics.dead_letter(settings.topics.control), contracts.DeadLetter)


def test_a_follower_keeps_the_good_knobs_and_dead_letters_the_poison(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    good = control_command(settings, 2, seq=1)
    nan_window = replace(good, seq=2, window_secs=math.nan).encode()
    beam3 = replace(good, seq=3, beam=3).encode()
    publish(settings, good, nan_window, beam3)

    follower = ControlFollower(settings).start()
    try:
        assert wait_for(lambda: len(dead_letters(settings)) == 2, 20.0, interval_s=0.2)
        assert follower.knobs == ladder(settings)[2], "the poison's higher seq did not put it in force"
        publish(settings, control_command(settings, 3, seq=4))
        assert wait_for(lambda: follower.knobs.level == 3), "a valid newer command still applies"
        # A replayed older command, then a poison whose dead letter shows the replay was read before it.
        publish(settings, control_command(settings, 0, seq=1), b"not avro")
        assert wait_for(lambda: len(dead_letters(settings)) == 3, 20.0, interval_s=0.2)
        assert follower.knobs == ladder(settings)[3], "the replay is stale"
    finally:
        follower.close()

    letters = dead_letters(settings)
    assert [letter.value for letter in letters[:2]] == [nan_window, beam3], "kept whole"
    assert letters[0].reason == "window_secs nan is not finite"
    assert letters[1].reason == "beam 3 is not one of (1, 2, 4)"
    assert "not an Avro single-object message" in letters[2].reason
    assert {(letter.source_topic, letter.key, letter.service) for letter in letters} == {
        (settings.topics.control, b"global", "control-follower")
    }
    assert [letter.error_type for letter in letters] == ["InvalidCommand", "InvalidCommand", "MalformedMessageError"]


def test_a_restarted_controller_continues_past_a_poison_seq_at_the_last_valid_level(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    good = control_command(settings, 2, seq=4)
    publish(settings, control_command(settings, 1, seq=3), good, replace(good, seq=9, level=9))
    assert resume_point(settings) == (9, 2)


def test_a_poison_command_mid_stream_leaves_the_transcript_correct(make_settings: SettingsFactory) -> None:
    """Windower, worker and assembler follow the control topic while a session streams; poison for each arrives
    after the first partial. Followers that applied it unchecked left the NaN window and beam 3 in force for the
    rest of the stream, and the session got no final transcript at all."""
    settings = make_settings(partitions=1)
    (plan,) = plan_sessions(load_samples()[3:4], sessions=1, duration_s=None, run_id=f"poison{uuid.uuid4().hex[:4]}")
    good = control_command(settings, 0, seq=1)
    poisons = [
        replace(good, seq=2, emit_interval_ms=0),
        replace(good, seq=3, beam=3),
        replace(good, seq=4, beam=3, window_secs=math.nan),  # the newest: in force for good if nothing checked it
    ]
    services = [ServiceProcess(settings, role) for role in ("windower", "worker", "assembler")]
    transcripts = TopicReader(settings, {settings.topics.transcripts: contracts.Transcript})
    try:
        for service in services:
            service.wait_ready(120)
        producer = AudioProducer(settings)
        streamer = threading.Thread(
            target=stream_sessions, args=(producer, [plan], threading.Event()), name="stream", daemon=True
        )
        streamer.start()
        transcripts.until(lambda got: len(got) >= 1, timeout_s=30)
        publish(settings, good, *poisons)
        streamer.join(30)
        assert not streamer.is_alive()

        def finals() -> str:
            records = transcripts.records(settings.topics.transcripts)
            by_segment = {t.segment: t.text for t in records if t.kind == "final"}
            return " ".join(by_segment[segment] for segment in sorted(by_segment))

        assert wait_for(lambda: wer(plan.reference, finals()) <= ENGINE_HELD_OUT_WER, 30.0, interval_s=0.2), (
            finals(),
            plan.reference,
        )
        producer.close()
    finally:
        codes = stop_all(services)
        transcripts.close()
    assert codes == [0, 0, 0], [s.output[-2000:] for s in services]
    letters = dead_letters(settings)
    assert sorted(letter.reason for letter in letters) == sorted(
        ["window_secs nan is not finite", "beam 3 is not one of (1, 2, 4)", "emit_interval_ms 0 is outside [160, 320]"]
        * 3
    ), "each service's follower rejected each poison"
