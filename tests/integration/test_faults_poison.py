"""Poison and oversize messages on every input topic while a healthy session streams through the whole pipeline.

Who consumes what (``TopicSettings``; each consumer's dead-letter topic is ``<topic>.dlq``):

* frames -> windower (faust agent, ``AgentDeadLetters``);
* hops -> worker (confluent consumer, ``DeadLetters``);
* hypotheses -> assembler (faust agent);
* control -> the ``ControlFollower`` of the windower, the worker and the assembler (each dead-letters);
* latency -> controller (dead-letters undecodable and untrusted events);
* capabilities -> controller's ``CapabilityFollower`` (dead-letters unreadable and implausible records; the test
  also checks it takes the next good record).

(The probe topic's reader takes only its own prober's key and has no dead-letter topic; the gateway's transcripts
reader is tested in tests/integration/test_gateway_service.py.)

For each topic three records land on the healthy session's partition mid-stream: one that does not decode,
one with a ~500 kB key and session id (the contract's first string field), one of ~1 MB that decodes but is
invalid there. Each must be dead-lettered with its reason, the letter bounded (key and value cut, the reason
saying so), the consumer must move past it (no crash loop, its group's committed offset beyond it), every
service keeps running, and the healthy session's hops, transcripts and words are as in a clean run.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest
from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaError, Message

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.contracts.codec import HEADER_LEN
from pipeline.demo.service import load_samples, plan_sessions, stream_sessions
from pipeline.ingress.service import AudioProducer
from pipeline.kafka.broker import EmbeddedBroker
from pipeline.kafka.clients import make_producer
from pipeline.kafka.dead_letters import KEPT_KEY_BYTES, KEPT_VALUE_BYTES, MAX_DEAD_LETTER_BYTES
from pipeline.kafka.readers import read_to_end
from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess
from tests.integration.test_faults import ENGINE_HELD_OUT_WER, OUTPUT_TIMEOUT_S, Outputs, assert_whole
from tests.plugins import builders
from tests.plugins.broker import settings_factory
from tests.plugins.kafka import committed_offsets, wait_for
from tests.plugins.services import running_services
from tests.unit.test_contracts_strict import raw_message, zz

pytestmark = [pytest.mark.integration, pytest.mark.faults]

HUGE_ID_BYTES = 500_000
NEAR_MB_BYTES = 999_000
#: The shortest bundled utterance (4 s), so each topic's run is short.
SAMPLE = 6
ROLES = ("windower", "worker", "assembler", "controller")


@dataclass(frozen=True)
class Poison:
    name: str
    key: bytes
    value: bytes
    #: What the dead letter's reason must say; None: not dead-lettered (skipped, or not addressed to the reader).
    reason: str | None


def with_first_string(encoded: bytes, old: str, new: bytes) -> bytes:
    """``encoded`` (a contract's single-object message whose first field is the string ``old``) with ``new`` there.

    Built by hand: the contracts refuse to encode a session id over their limit, a writer elsewhere may not.
    """
    head = zz(len(old.encode())) + old.encode()
    assert encoded[HEADER_LEN : HEADER_LEN + len(head)] == head
    return encoded[:HEADER_LEN] + zz(len(new)) + new + encoded[HEADER_LEN + len(head) :]


GARBAGE = b"\x00 not an avro record"
UNDECODABLE = "not an Avro single-object message"
OVER_LIMIT = f"length {HUGE_ID_BYTES} over the limit of 512 bytes"


def huge_id(encoded: bytes, old: str) -> Poison:
    return Poison("huge-id", b"k" * HUGE_ID_BYTES, with_first_string(encoded, old, b"s" * HUGE_ID_BYTES), OVER_LIMIT)


def frames_poisons(settings: Settings, session: str) -> list[Poison]:
    big = builders.frame(f"{session}-big", 0, payload=bytes(NEAR_MB_BYTES))
    return [
        Poison("undecodable", session.encode(), GARBAGE, UNDECODABLE),
        huge_id(builders.frame(session, 1).encode(), session),
        Poison("near-1MB", session.encode(), big.encode(), f"payload is {NEAR_MB_BYTES} bytes"),
    ]


def hops_poisons(settings: Settings, session: str) -> list[Poison]:
    big = builders.hop(f"{session}-big", 0, audio=bytes(NEAR_MB_BYTES + 1))  # an odd byte count: no pcm16
    return [
        Poison("undecodable", session.encode(), GARBAGE, UNDECODABLE),
        huge_id(builders.hop(session, 1).encode(), session),
        Poison("near-1MB", session.encode(), big.encode(), f"audio of {NEAR_MB_BYTES + 1} bytes"),
    ]


def hypotheses_poisons(settings: Settings, session: str) -> list[Poison]:
    big = builders.hypothesis(
        f"{session}-big", 0, words=(), text="x" * NEAR_MB_BYTES, window_start_ms=900.0, window_end_ms=100.0
    )
    return [
        Poison("undecodable", session.encode(), GARBAGE, UNDECODABLE),
        huge_id(builders.hypothesis(session, 1).encode(), session),
        Poison("near-1MB", session.encode(), big.encode(), "cannot stitch: bad window"),
    ]


def control_poisons(settings: Settings, session: str) -> list[Poison]:
    # Level 3 at a seq far ahead: put in force, it would show in every service's log.
    valid = builders.control_command(settings, 3, seq=10_000)
    return [
        Poison("undecodable", b"global", GARBAGE, UNDECODABLE),
        # A 500 kB key is another scope: no follower of "global" takes it, none dead-letters it.
        Poison(
            "huge-id", b"k" * HUGE_ID_BYTES, with_first_string(valid.encode(), "global", b"g" * HUGE_ID_BYTES), None
        ),
        Poison(
            "near-1MB", b"global", replace(valid, beam=3, reason="x" * NEAR_MB_BYTES).encode(), "beam 3 is not one of"
        ),
    ]


def latency_poisons(settings: Settings, session: str) -> list[Poison]:
    big = builders.latency_event(math.nan, session_id=f"{session}-big", worker_id="w" * NEAR_MB_BYTES)
    return [
        Poison("undecodable", session.encode(), GARBAGE, UNDECODABLE),
        huge_id(builders.latency_event(session_id=session).encode(), session),
        Poison("near-1MB", session.encode(), raw_message(contracts.LATENCY, big.to_avro()), "worker_id: length"),
    ]


def capabilities_record(worker_id: str, saving: float, device: str = "cpu") -> contracts.WorkerCapabilities:
    return contracts.WorkerCapabilities(
        worker_id=worker_id,
        device=device,
        measured_ts_ms=now_ms(),
        batch_size=8,
        base_batch_ms=40.0,
        savings={"beam2": saving},
        tiers=("full",),
    )


def capabilities_poisons(settings: Settings, session: str) -> list[Poison]:
    return [
        Poison("undecodable", b"poison-worker", GARBAGE, UNDECODABLE),
        Poison(
            "huge-id",
            b"k" * HUGE_ID_BYTES,
            raw_message(contracts.CAPABILITIES, capabilities_record("k" * HUGE_ID_BYTES, 1.5).to_avro()),
            f"worker_id: length {HUGE_ID_BYTES} over the limit of 256 bytes",
        ),
        Poison(
            "near-1MB",
            b"poison-worker",
            capabilities_record("poison-worker", 1.5, "d" * NEAR_MB_BYTES).encode(),
            "a saving outside [0, 1)",
        ),
    ]


@dataclass(frozen=True)
class Target:
    topic: Callable[[Settings], str]
    poisons: Callable[[Settings, str], list[Poison]]
    #: Services whose reader dead-letters each poison (one letter each), and the consumer group that commits.
    readers: tuple[str, ...]
    group: str | None


TARGETS = {
    "frames": Target(lambda s: s.topics.frames, frames_poisons, ("windower",), "windower"),
    "hops": Target(lambda s: s.topics.hops, hops_poisons, ("worker",), "worker"),
    "hypotheses": Target(lambda s: s.topics.hypotheses, hypotheses_poisons, ("assembler",), "assembler"),
    "control": Target(lambda s: s.topics.control, control_poisons, ("windower", "worker", "assembler"), None),
    "latency": Target(lambda s: s.topics.latency, latency_poisons, ("controller",), None),
    "capabilities": Target(lambda s: s.topics.capabilities, capabilities_poisons, ("controller",), None),
}


@pytest.fixture(scope="module")
def services(broker: EmbeddedBroker) -> Iterator[tuple[Settings, dict[str, ServiceProcess]]]:
    """Windower, worker, assembler and controller for the module; each must exit 0 on SIGTERM after it."""
    settings = settings_factory(broker.bootstrap_servers)(partitions=2)
    with running_services(settings, *ROLES, ready_timeout_s=180) as running:
        yield settings, running


def partition_of(settings: Settings, key: bytes) -> int:
    """A key's partition, as every hopline producer (murmur2) places it."""
    return (murmur2(key) & 0x7FFFFFFF) % settings.topics.partitions


def produce(settings: Settings, topic: str, partition: int, poisons: list[Poison]) -> list[int]:
    """Send the poisons to ``partition`` (one partition for the single-partition topics); returns their offsets."""
    producer = make_producer(settings)
    offsets: dict[str, int] = {}

    def delivered(poison: Poison) -> Callable[[KafkaError | None, Message], None]:
        def report(error: KafkaError | None, message: Message) -> None:
            assert error is None, error
            offsets[poison.name] = message.offset() or 0

        return report

    for poison in poisons:
        producer.produce(topic, key=poison.key, value=poison.value, partition=partition, on_delivery=delivered(poison))
    assert producer.flush(30) == 0
    return [offsets[poison.name] for poison in poisons]


@pytest.mark.parametrize("target", list(TARGETS))
def test_poison_and_oversize_messages_are_dead_lettered_and_the_healthy_session_is_unaffected(
    services: tuple[Settings, dict[str, ServiceProcess]], target: str
) -> None:
    settings, running = services
    spec = TARGETS[target]
    topic = spec.topic(settings)
    (plan,) = plan_sessions(load_samples()[SAMPLE : SAMPLE + 1], 1, None, f"poison-{target}-{uuid.uuid4().hex[:4]}")
    poisons = spec.poisons(settings, plan.session_id)
    single = topic in (settings.topics.control, settings.topics.capabilities)
    partition = 0 if single else partition_of(settings, plan.session_id.encode())
    dead_letter_topic = settings.topics.dead_letter(topic)
    logged = {role: len(service.lines) for role, service in running.items()}

    outputs = Outputs(settings, [plan.session_id])
    producer = AudioProducer(settings)
    streamer = threading.Thread(target=stream_sessions, args=(producer, [plan], threading.Event()), daemon=True)
    streamer.start()
    time.sleep(1.5)  # mid-stream: the session's state is live in every service
    offsets = produce(settings, topic, partition, poisons)
    if target == "capabilities":  # the next good record must still be taken
        produce(
            settings, topic, 0, [Poison("good", b"good-worker", capabilities_record("good-worker", 0.2).encode(), None)]
        )
    streamer.join(30)
    assert producer.close(30).failed == 0
    outputs.reader.wait_for(outputs.finalised, OUTPUT_TIMEOUT_S)

    expected = [poison for poison in poisons if poison.reason is not None]
    letters: list[tuple[bytes, contracts.DeadLetter]] = []

    def dead_lettered() -> bool:
        letters[:] = [
            (message.value() or b"", contracts.DeadLetter.decode(message.value()))
            for message in read_to_end(settings, "test-dlq", [dead_letter_topic])
            if message.key() in {p.key[:KEPT_KEY_BYTES] for p in poisons}
        ]
        return len(letters) >= len(expected) * len(spec.readers)

    assert wait_for(dead_lettered, 30, interval_s=0.5), (target, [letter.reason for _raw, letter in letters])
    outputs.reader.close(check=False)  # the poisons on the pipeline's topics do not decode

    # Every service still runs (none crashed on a poison or restarted), and none put the poison's knobs in force.
    for role, service in running.items():
        assert service.running, f"{role} stopped: {service.output[-3000:]}"
        new = service.lines[logged[role] :]
        assert not any("control: level 3 in force" in line for line in new), f"{role} applied a poison command"
    # Each poison dead-lettered once by each of its readers, with its reason, the letter bounded.
    assert len(letters) == len(expected) * len(spec.readers), [letter.reason for _raw, letter in letters]
    for poison, offset in zip(poisons, offsets, strict=True):
        mine = [(raw, letter) for raw, letter in letters if letter.offset == offset and letter.partition == partition]
        if poison.reason is None:
            assert not mine, f"{poison.name} is not for these readers: {[letter.reason for _raw, letter in mine]}"
            continue
        assert len(mine) == len(spec.readers), f"{poison.name}: {len(mine)} letters"
        for raw, letter in mine:
            assert poison.reason in letter.reason, (poison.name, letter.reason[:500])
            assert letter.source_topic == topic
            assert len(raw) <= MAX_DEAD_LETTER_BYTES and len(letter.key or b"") <= KEPT_KEY_BYTES
            assert letter.value == poison.value[:KEPT_VALUE_BYTES]
            if len(poison.value) > KEPT_VALUE_BYTES:
                assert f"value cut to its first {KEPT_VALUE_BYTES} of {len(poison.value)} bytes" in letter.reason
    if target == "capabilities":
        controller = running["controller"].lines[logged["controller"] :]
        assert sum("ignoring" in line and "capabilities" in line for line in controller) >= 3, controller[-20:]
        assert wait_for(
            lambda: any("levels priced" in line for line in running["controller"].lines[logged["controller"] :]), 10
        ), "the good record after the poisons was taken"
    # The consumer moved past the poisons: its group committed beyond them.
    if spec.group is not None:
        group = f"{settings.app_id}-{spec.group}"
        assert wait_for(lambda: committed_offsets(settings, group, topic)[partition] > max(offsets), 15), group
    # The healthy session, whose partition the poisons sat on, went through whole.
    wer, transcripts = assert_whole(outputs, [plan])
    assert wer <= ENGINE_HELD_OUT_WER, transcripts
