"""``hopline controller``: latency events in, degradation commands out.

Consumes the latency topic in a consumer group of its own, feeds :class:`ControlPolicy`,
evaluates every ``controller.tick_s`` and publishes each level change as a ControlCommand
keyed by scope ``global`` to the compacted control topic, where every service's
:class:`~pipeline.control.ControlFollower` picks it up. On start it reads the control topic
to continue the sequence number and the level in force, so a restart does not reset the
pipeline to full quality under load.

Offsets are never committed and a new group starts at the end of the topic: only the last
``window_s`` of events matter, so a restarted controller must not replay old load. Events
older than the window (by their ``event_ts_ms``) are dropped for the same reason.

A :class:`~pipeline.observe.prober.BrokerProber` runs inside the controller (``probe.enabled``);
its verdict goes into every evaluation, and while it says the transport is slow the policy
withholds raises (a slow broker is not fixed by lower quality). Each withheld raise is one
``decision {"direction":"hold",...}`` WARNING line with the probe's figures and the latency figures
that would have raised, and counts in ``hopline_controller_transport_holds_total``; no command is
published. Without the probe topic the controller runs as before, without the probe.

A decision moves the controller only once Kafka has acknowledged its command: the policy proposes
(:meth:`ControlPolicy.evaluate`), the command is produced and flushed, and only a successful delivery
report commits it (:meth:`ControlPolicy.commit`). A command that was not acknowledged is logged at
ERROR and counted in ``hopline_controller_send_failures_total``; the level stays, so the next tick
proposes again. Every attempt takes a new seq: one that timed out may still land, and followers
keep only the highest seq, so a retry must be newer than it.

The levels are priced with what the workers measured each knob saves (the capabilities topic,
:mod:`pipeline.control.capabilities`); a repricing is logged with the compute per level and the
levels left worthwhile. A latency event whose pipeline-clock figures are non-finite or absurd is
refused by the policy, counted (``outcome="untrusted"``) and dead-lettered with the reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter, Gauge

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.control.capabilities import CapabilityFollower
from pipeline.control.ladder import GLOBAL_SCOPE, InvalidCommand, command_record, validate_command
from pipeline.control.policy import ControlPolicy, Decision, TransportHold
from pipeline.errors import CliError
from pipeline.kafka.clients import make_consumer, make_producer
from pipeline.kafka.dead_letters import DeadLetters
from pipeline.kafka.produce_stats import PRODUCE_STATS
from pipeline.kafka.readers import read_to_end
from pipeline.observe.latency import MEASURES
from pipeline.observe.metrics import serve_metrics
from pipeline.observe.probe import ProbeVerdict
from pipeline.observe.prober import BrokerProber
from pipeline.ready import announce_ready, announce_stats
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "controller"

LEVEL = Gauge("hopline_controller_level", "Degradation level in force (0 = full quality).")
DECISIONS = Counter("hopline_controller_decisions_total", "Level changes published.", ["direction"])
COMPONENT_P95 = Gauge(
    "hopline_controller_component_p95_seconds", "Sliding-window p95 per latency component.", ["component"]
)
WINDOW_EVENTS = Gauge("hopline_controller_window_events", "Latency events in the sliding window.")
EVENTS = Counter("hopline_controller_events_total", "Latency events consumed, by outcome.", ["outcome"])
TRANSPORT_HOLDS = Counter(
    "hopline_controller_transport_holds_total", "Raises withheld on a transport alarm (one per level withheld)."
)
TRANSPORT_HOLDING = Gauge("hopline_controller_transport_hold", "1 while a raise is withheld on a transport alarm.")
SEND_FAILURES = Counter(
    "hopline_controller_send_failures_total",
    "Commands Kafka did not acknowledge (the level stayed; proposed again next tick).",
)

#: How long a tick waits for its command's delivery report before counting it as not sent.
SEND_TIMEOUT_S = 5.0


def resume_point(settings: Settings, scope: str = GLOBAL_SCOPE) -> tuple[int, int]:
    """``(seq, level)`` a starting controller continues from, read from the control topic.

    ``seq`` is the highest of any readable command of ``scope``, a rejected one included, so the next
    command is newer than anything a follower has seen; ``level`` is that of the newest valid one (0
    without), so a poison command on the topic cannot start the controller at a level off the ladder.
    """
    seq, newest_valid = 0, None
    for message in read_to_end(settings, "history", [settings.topics.control]):
        key = message.key()
        if key is None or key.decode(errors="replace") != scope:
            continue
        try:
            command = contracts.ControlCommand.decode(message.value())
        except contracts.ContractError as exc:
            log.warning("skipping unreadable control command at offset %s: %s", message.offset(), exc)
            continue
        seq = max(seq, command.seq)
        try:
            validate_command(command, settings)
        except InvalidCommand as exc:
            log.warning("skipping invalid control command seq %d: %s", command.seq, exc)
            continue
        if newest_valid is None or command.seq >= newest_valid.seq:
            newest_valid = command
    return seq, newest_valid.level if newest_valid is not None else 0


def decision_line(seq: int, decision: Decision) -> str:
    """One structured log line per decision: everything an operator needs to audit it."""
    knobs = decision.knobs
    return "decision " + json.dumps(
        {
            "seq": seq,
            "direction": decision.direction,
            "from_level": decision.previous_level,
            "level": knobs.level,
            "emit_interval_ms": knobs.emit_interval_ms,
            "window_secs": knobs.window_secs,
            "beam": knobs.beam,
            "admit_new_sessions": knobs.admit_new_sessions,
            "reason": decision.reason,
            "metrics": decision.metrics,
        },
        separators=(",", ":"),
    )


def hold_line(seq: int, hold: TransportHold) -> str:
    """The structured line of a raise withheld on a transport alarm (nothing published: ``seq`` is the last)."""
    return "decision " + json.dumps(
        {
            "seq": seq,
            "direction": "hold",
            "from_level": hold.level,
            "level": hold.level,
            "withheld_level": hold.withheld.level,
            "reason": hold.reason,
            "metrics": hold.metrics,
        },
        separators=(",", ":"),
    )


def start_prober(settings: Settings) -> BrokerProber | None:
    """The controller's broker prober, started; None when it is off or cannot start (logged)."""
    if not settings.probe.enabled:
        return None
    try:
        return BrokerProber(settings, SERVICE).start()
    except (CliError, KafkaException) as exc:
        log.warning("broker probe off (create the topics with `hopline topics create`): %s", exc)
        return None


class DecisionPublisher:
    """The controller's ticks without its consumer: the policy proposes, Kafka acknowledges, then the policy commits.

    Takes any producer (a fake one in tests); ``seq`` is the last seq used, ``send_timeout_s`` how long
    a tick waits for its command's delivery report.
    """

    def __init__(
        self,
        settings: Settings,
        policy: ControlPolicy,
        producer: Producer,
        seq: int,
        scope: str = GLOBAL_SCOPE,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self.policy = policy
        self._producer = producer
        self.seq = seq
        self._scope = scope
        self._send_timeout_s = send_timeout_s
        self._withheld_level: int | None = None

    def tick(self, transport: ProbeVerdict | None) -> Decision | None:
        """Evaluate the policy; publish a level change and commit, log and count it once acknowledged.

        Returns the decision committed; None when there was none or its command was not acknowledged.
        """
        decision = self.policy.evaluate(transport)
        self._note_hold(self.policy.hold)
        stats = self.policy.stats()
        WINDOW_EVENTS.set(stats.events)
        if stats.events:
            for name in MEASURES:
                COMPONENT_P95.labels(name).set(stats.p95[name] / 1000.0)
        if decision is None:
            return None
        self.seq += 1
        record = command_record(
            self.seq, decision.knobs, decision.reason, decision.metrics, self._scope, self._settings
        )
        failure = self._send(record)
        if failure is not None:
            SEND_FAILURES.inc()
            log.error(
                "control command seq %d (level %d -> %d) not acknowledged, level %d stays: %s",
                self.seq,
                decision.previous_level,
                decision.level,
                decision.previous_level,
                failure,
            )
            return None
        self.policy.commit(decision)
        LEVEL.set(decision.level)
        DECISIONS.labels(decision.direction).inc()
        log.info(decision_line(self.seq, decision))
        return decision

    def _send(self, record: contracts.ControlCommand) -> str | None:
        """None once Kafka acknowledged ``record``; else why not."""
        reports: list[KafkaError | None] = []
        try:
            self._producer.produce(
                self._settings.topics.control,
                key=self._scope.encode(),
                value=record.encode(),
                on_delivery=lambda error, _message: reports.append(error),
            )
        except (BufferError, KafkaException) as exc:
            return f"not produced: {exc}"
        self._producer.flush(self._send_timeout_s)
        if not reports:
            return f"no delivery report within {self._send_timeout_s:g} s"
        return None if reports[0] is None else reports[0].str()

    def _note_hold(self, hold: TransportHold | None) -> None:
        """One line and one count per level withheld, not one per tick."""
        TRANSPORT_HOLDING.set(0 if hold is None else 1)
        withheld = None if hold is None else hold.withheld.level
        if hold is not None and withheld != self._withheld_level:
            TRANSPORT_HOLDS.inc()
            log.warning(hold_line(self.seq, hold))
        self._withheld_level = withheld


def start_capabilities(settings: Settings) -> CapabilityFollower | None:
    """The reader of the workers' measured knob savings, started; None without the topic (levels keep
    the default prices, logged)."""
    try:
        return CapabilityFollower(settings).start()
    except (CliError, KafkaException) as exc:
        log.warning("no worker capabilities, levels priced with defaults: %s", exc)
        return None


class Controller:
    """The service: one consumer, one producer, one policy; :meth:`run` until SIGTERM."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        seq, level = resume_point(settings, GLOBAL_SCOPE)
        self._clock = clock
        self._producer = make_producer(settings)
        self.publisher = DecisionPublisher(
            settings, ControlPolicy(settings, level=level, clock=clock), self._producer, seq
        )
        self._dead_letters = DeadLetters(settings, self._producer, "controller")
        self._consumer = make_consumer(
            settings,
            f"{settings.app_id}-controller",
            **{"auto.offset.reset": "latest", "fetch.wait.max.ms": settings.kafka.background_fetch_wait_max_ms},
        )
        self._ready_announced = False
        self._consumer.subscribe([settings.topics.latency], on_assign=self._on_assign)
        self.prober = start_prober(settings)
        self.capabilities = start_capabilities(settings)
        self._priced_version = 0
        LEVEL.set(level)
        log.info("controller starting at level %d after seq %d", level, seq)

    @property
    def policy(self) -> ControlPolicy:
        return self.publisher.policy

    @property
    def seq(self) -> int:
        return self.publisher.seq

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        topic = self._settings.topics.latency
        log.info(
            "controller ready: consuming %s partitions %s at level %d",
            topic,
            sorted(p.partition for p in partitions),
            self.policy.level,
        )
        if not self._ready_announced:
            self._ready_announced = True
            announce_ready(SERVICE)

    def handle(self, message: Message) -> None:
        """One latency-topic message: into the window, or to the dead-letter topic with the reason."""
        try:
            event = contracts.LatencyEvent.decode(message.value())
        except contracts.ContractError as exc:
            EVENTS.labels("invalid").inc()
            self._dead_letters.publish(message, str(exc), exc)
            return
        if event.event_ts_ms < now_ms() - self._settings.controller.window_s * 1000.0:
            EVENTS.labels("stale").inc()
            return
        if not self.policy.observe(event):
            EVENTS.labels("untrusted").inc()
            self._dead_letters.publish(message, "untrusted latency figures (non-finite or implausible)", None)
            return
        EVENTS.labels("observed").inc()

    def tick(self) -> Decision | None:
        """One :meth:`DecisionPublisher.tick` with the probe's verdict, after re-pricing the levels on new savings."""
        if self.capabilities is not None and self.capabilities.version != self._priced_version:
            self._priced_version = self.capabilities.version
            savings = self.capabilities.savings()
            self.policy.set_savings(savings)
            costs = ", ".join(f"{level}: {cost:.2f}" for level, cost in enumerate(self.policy.costs))
            log.info(
                "levels priced with the workers' savings %s: compute per level {%s}, worthwhile levels %s",
                json.dumps(savings, sort_keys=True),
                costs,
                list(self.policy.worthwhile),
            )
        return self.publisher.tick(self.prober.verdict() if self.prober is not None else None)

    def run(self) -> None:
        """Poll and tick until interrupted (SIGTERM arrives as KeyboardInterrupt)."""
        tick_s = self._settings.controller.tick_s
        next_tick = self._clock() + tick_s
        while True:
            message = self._consumer.poll(max(0.0, min(tick_s, next_tick - self._clock())))
            if message is not None:
                error = message.error()
                if error is None:
                    self.handle(message)
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("latency topic: %s", error)
            if self._clock() >= next_tick:
                self.tick()
                next_tick = max(next_tick + tick_s, self._clock())
            self._producer.poll(0)

    def close(self) -> None:
        if self.prober is not None:
            self.prober.close()
        if self.capabilities is not None:
            self.capabilities.close()
        self._consumer.close()
        self._producer.flush(5)


def run_controller(settings: Settings) -> int:
    serve_metrics(settings, "controller")
    controller = Controller(settings)
    try:
        controller.run()
    except KeyboardInterrupt:
        log.info("controller stopping at level %d (seq %d)", controller.policy.level, controller.seq)
    finally:
        controller.close()
        announce_stats(SERVICE, PRODUCE_STATS.summary())
    return 0
