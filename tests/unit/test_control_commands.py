"""Bad control commands, without a broker: refused when built, rejected when applied, never sent twice with one seq.

Covers :func:`pipeline.control.ladder.validate_command` (through ``command_record`` and
``knobs_from_command``), :class:`pipeline.control.follower.CommandGate` and
:class:`pipeline.control.service.DecisionPublisher` with a fake producer.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message
from prometheus_client import REGISTRY

from pipeline import contracts
from pipeline.control.follower import CommandGate
from pipeline.control.ladder import BEAMS, GLOBAL_SCOPE, InvalidCommand, command_record, knobs_from_command, ladder
from pipeline.control.policy import ControlPolicy
from pipeline.control.service import DecisionPublisher
from pipeline.settings import Settings, TopicSettings
from tests.plugins.builders import latency_event
from tests.plugins.clock import FakeClock

SETTINGS = Settings(topics=TopicSettings(prefix="unit"))
LADDER = ladder(SETTINGS)
#: One field of a command changed to something no service can apply, and the reason it is refused for.
POISON: dict[str, tuple[dict[str, Any], str]] = {
    "window NaN": ({"window_secs": math.nan}, "window_secs nan is not finite"),
    "window 0": ({"window_secs": 0.0}, r"window_secs 0 is outside \[0.96, 1.28\]"),
    "window above max": ({"window_secs": 2.56}, r"window_secs 2.56 is outside \[0.96, 1.28\]"),
    "window inf": ({"window_secs": math.inf}, "window_secs inf is not finite"),
    "beam 3": ({"beam": 3}, r"beam 3 is not one of \(1, 2, 4\)"),
    "beam 8": ({"beam": 8}, r"beam 8 is not one of \(1, 2, 4\)"),
    "level 9": ({"level": 9}, r"level 9 is not on the ladder \(0..5\)"),
    "level -1": ({"level": -1}, r"level -1 is not on the ladder \(0..5\)"),
    "emit 0": ({"emit_interval_ms": 0}, r"emit_interval_ms 0 is outside \[160, 320\]"),
    "tier unknown": ({"tier": "int4"}, r"tier 'int4' is not one of \('full', 'int8'\)"),
    "seq 0": ({"seq": 0}, "seq 0 is below 1"),
    "scope empty": ({"scope": ""}, "scope is empty"),
    "issued inf": ({"issued_ts_ms": math.inf}, "issued_ts_ms inf is not finite"),
    "metric NaN": ({"metrics": {"queue_wait_ms_p95": math.nan}}, r"metrics\[queue_wait_ms_p95\] nan is not finite"),
}


#: What ``command_record`` is given (``issued_ts_ms`` it stamps itself, so that case is for followers only).
BUILT = [case for case in POISON if "issued_ts_ms" not in POISON[case][0]]
KNOB_FIELDS = {"level", "emit_interval_ms", "window_secs", "beam", "tier"}


def good(level: int = 2, seq: int = 5) -> contracts.ControlCommand:
    return command_record(seq, LADDER[level], "test", {"queue_wait_ms_p95": 130.0}, GLOBAL_SCOPE, SETTINGS)


def poisoned(case: str, seq: int = 6) -> contracts.ControlCommand:
    """A valid command with one field broken, built the way an attacker would: past ``command_record``."""
    changes, _reason = POISON[case]
    return replace(good(seq=seq), **{"seq": seq, **changes})


def message(command: contracts.ControlCommand | bytes, offset: int = 0, key: bytes = b"global") -> Message:
    value = command if isinstance(command, bytes) else command.encode()
    return Message(topic=SETTINGS.topics.control, partition=0, offset=offset, key=key, value=value)


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Letters:
    """Stands in for the follower's dead-letter producer: what it was given."""

    sent: list[tuple[Message, str, BaseException]] = field(default_factory=list)

    def __call__(self, message: Message, reason: str, error: BaseException) -> None:
        self.sent.append((message, reason, error))


def test_recognizer_beams_are_the_ones_commands_may_set() -> None:
    from workers.asr.decoder import BEAMS as RECOGNIZER_BEAMS

    assert BEAMS == RECOGNIZER_BEAMS


def test_every_ladder_level_builds_and_reads_back() -> None:
    for knobs in LADDER:
        command = command_record(knobs.level + 1, knobs, "test", {}, GLOBAL_SCOPE, SETTINGS)
        assert knobs_from_command(contracts.ControlCommand.decode(command.encode()), SETTINGS) == knobs


def test_a_ladder_of_other_settings_is_checked_against_its_own_ranges() -> None:
    narrow = SETTINGS.override(audio={"window_secs": 1.6, "min_window_secs": 1.28}, worker={"beam": 2})
    own = ladder(narrow)[1]
    assert knobs_from_command(command_record(1, own, "test", {}, GLOBAL_SCOPE, narrow), narrow) == own
    with pytest.raises(InvalidCommand, match=r"beam 4 is not one of \(1, 2\)"):
        knobs_from_command(good(level=1), narrow)
    with pytest.raises(InvalidCommand, match=r"window_secs 0.96 is outside \[1.28, 1.6\]"):
        knobs_from_command(good(level=3), narrow)


@pytest.mark.parametrize("case", BUILT)
def test_a_bad_command_is_refused_where_it_is_built(case: str) -> None:
    changes, reason = POISON[case]
    knobs = replace(LADDER[2], **{k: v for k, v in changes.items() if k in KNOB_FIELDS})
    seq, scope, metrics = changes.get("seq", 5), changes.get("scope", GLOBAL_SCOPE), changes.get("metrics", {})
    with pytest.raises(InvalidCommand, match=f"^{reason}$"):
        command_record(seq, knobs, "test", metrics, scope, SETTINGS)


@pytest.mark.parametrize("case", POISON)
def test_a_bad_command_is_rejected_where_it_is_applied(case: str) -> None:
    letters = Letters()
    gate = CommandGate(SETTINGS, letters)
    assert gate.apply(message(good(level=2, seq=5))) == "applied"
    invalid_before = count("hopline_control_commands_total", outcome="invalid")
    bad = message(poisoned(case), offset=1)

    assert gate.apply(bad) == "invalid"

    assert gate.knobs == LADDER[2] and gate.seq == 5, "the last good knobs stay in force"
    assert count("hopline_control_commands_total", outcome="invalid") == invalid_before + 1
    ((sent, reason, error),) = letters.sent
    assert sent is bad and isinstance(error, InvalidCommand)
    assert reason == str(error) and re.fullmatch(POISON[case][1], reason)


def test_an_unreadable_command_is_rejected_and_dead_lettered() -> None:
    letters = Letters()
    gate = CommandGate(SETTINGS, letters)
    assert gate.apply(message(b"not avro")) == "invalid"
    assert gate.knobs == LADDER[0] and gate.seq == 0
    ((_, reason, error),) = letters.sent
    assert isinstance(error, contracts.ContractError) and "not an Avro single-object message" in reason


def test_only_a_newer_seq_moves_the_knobs() -> None:
    letters = Letters()
    gate = CommandGate(SETTINGS, letters)
    stale_before = count("hopline_control_commands_total", outcome="stale")
    applied_before = count("hopline_control_commands_total", outcome="applied")

    assert gate.apply(message(good(level=3, seq=7))) == "applied"
    assert gate.apply(message(good(level=1, seq=7), offset=1)) == "stale", "same seq: a replay"
    assert gate.apply(message(good(level=0, seq=6), offset=2)) == "stale", "an older command after a newer one"
    assert gate.knobs == LADDER[3] and gate.seq == 7
    assert gate.apply(message(good(level=3, seq=8), offset=3)) == "applied", "newer, same knobs"
    assert gate.apply(message(good(level=4, seq=9), offset=4)) == "applied"

    assert gate.knobs == LADDER[4] and gate.seq == 9
    assert count("hopline_control_commands_total", outcome="stale") == stale_before + 2
    assert count("hopline_control_commands_total", outcome="applied") == applied_before + 3
    assert letters.sent == []


def test_another_scopes_commands_are_not_followed_nor_counted() -> None:
    gate = CommandGate(SETTINGS, Letters())
    outcomes = ("applied", "stale", "invalid")
    before = [count("hopline_control_commands_total", outcome=o) for o in outcomes]
    other = replace(good(level=5, seq=3), scope="other")
    assert gate.apply(message(other, key=b"other")) is None
    assert gate.knobs == LADDER[0]
    assert [count("hopline_control_commands_total", outcome=o) for o in outcomes] == before


@dataclass
class FakeProducer:
    """Queues like a producer; ``flush`` reports each message delivered, failed with ``error``, or not at all."""

    error: KafkaError | None = None
    silent: bool = False
    refuse: bool = False
    produced: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    pending: list[Callable[[KafkaError | None, Any], None]] = field(default_factory=list)

    def produce(
        self, topic: str, value: bytes, key: bytes, on_delivery: Callable[[KafkaError | None, Any], None]
    ) -> None:
        if self.refuse:
            raise BufferError("Local: Queue full")
        self.produced.append((topic, key, value))
        self.pending.append(on_delivery)

    def flush(self, timeout: float) -> int:
        if not self.silent:
            for report in self.pending:
                report(self.error, None)
            self.pending.clear()
        return len(self.pending)

    def commands(self) -> list[contracts.ControlCommand]:
        return [contracts.ControlCommand.decode(value) for _topic, _key, value in self.produced]


def overloaded_publisher(producer: FakeProducer) -> DecisionPublisher:
    """A publisher at level 0 after seq 7 whose policy has seen queueing worth a raise."""
    clock = FakeClock()
    settings = SETTINGS.override(controller={"min_events": 20})
    policy = ControlPolicy(settings, clock=clock)
    for _ in range(30):
        policy.observe(latency_event(210.0, hop_seq=0, event_ts_ms=0.0, batch_size=1))
    return DecisionPublisher(settings, policy, producer, seq=7, send_timeout_s=0.01)  # type: ignore[arg-type]


def test_an_unacknowledged_command_leaves_the_level_and_the_next_tick_retries_with_a_new_seq(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = FakeProducer(error=KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out"))
    publisher = overloaded_publisher(producer)
    failures_before = count("hopline_controller_send_failures_total")
    level_gauge = count("hopline_controller_level")

    with caplog.at_level(logging.ERROR, logger="pipeline.control.service"):
        assert publisher.tick(None) is None
    assert publisher.policy.level == 0, "not committed"
    assert count("hopline_controller_send_failures_total") == failures_before + 1
    assert count("hopline_controller_level") == level_gauge
    assert "seq 8" in caplog.text and "Local: Message timed out" in caplog.text
    (first,) = producer.commands()
    assert first.seq == 8 and first.level > 0

    producer.error = None
    decision = publisher.tick(None)

    assert decision is not None and decision.level == first.level
    assert publisher.policy.level == first.level and publisher.seq == 9
    assert [c.seq for c in producer.commands()] == [8, 9], "a retry never reuses the seq of an attempt"
    assert producer.commands()[1].level == first.level
    assert count("hopline_controller_level") == first.level
    assert publisher.tick(None) is None and len(producer.produced) == 2, "committed: nothing left to propose"


@pytest.mark.parametrize(
    ("producer", "reason"),
    [
        (FakeProducer(silent=True), "no delivery report within 0.01 s"),
        (FakeProducer(refuse=True), "not produced: Local: Queue full"),
    ],
    ids=["no report", "queue full"],
)
def test_a_command_without_a_delivery_report_counts_as_not_sent(
    producer: FakeProducer, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = overloaded_publisher(producer)
    failures_before = count("hopline_controller_send_failures_total")
    with caplog.at_level(logging.ERROR, logger="pipeline.control.service"):
        assert publisher.tick(None) is None
    assert publisher.policy.level == 0 and publisher.seq == 8
    assert count("hopline_controller_send_failures_total") == failures_before + 1
    assert reason in caplog.text
