"""One settings tree for CLI, services and tests.

Every value can be set from the environment with the ``HOPLINE_`` prefix and ``__`` between
levels, e.g. ``HOPLINE_KAFKA__BOOTSTRAP_SERVERS=10.0.0.5:9092`` or
``HOPLINE_AUDIO__WINDOW_SECS=0.96``. Defaults are the mission's numbers.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Section(BaseModel):
    """One section of :class:`Settings`; frozen, so a changed value goes through :meth:`Settings.override`."""

    model_config = ConfigDict(frozen=True)


class KafkaSettings(Section):
    """Client settings tuned for latency; the same for Apache Kafka and the embedded broker."""

    bootstrap_servers: str = "127.0.0.1:19092"
    fetch_wait_max_ms: int = Field(10, ge=0, description="Broker fetch wait; small so hops do not idle.")
    background_fetch_wait_max_ms: int = Field(
        250,
        ge=0,
        description="Fetch wait of readers off the latency path (control followers, the controller's latency "
        "events): a command takes effect at most this much later, and these readers send 25x fewer idle fetches "
        "(the embedded broker serves every fetch under one lock, listing the partition's stored batches).",
    )
    session_timeout_ms: int = Field(6000, ge=1000, description="Group session timeout; small joins fast.")
    heartbeat_interval_ms: int = Field(1000, ge=100)
    linger_ms: float = Field(1.0, ge=0, description="Producer batching delay.")
    acks: Literal["all", "1", "0"] = "all"
    partitioner: str = Field(
        "murmur2_random",
        description="Java/aiokafka-compatible key hashing, so a session has one partition in every topic.",
    )
    replication_factor: int = Field(1, ge=1)
    statistics_interval_ms: int = Field(
        1000, ge=0, description="librdkafka statistics interval: feeds the produce-batch counters (0 = off)."
    )


class TopicSettings(Section):
    """Topic names are ``<prefix>.<role>``; tests use a uuid prefix to stay isolated."""

    prefix: str = "hopline"
    partitions: int = Field(4, ge=1, description="Partitions of every keyed pipeline topic.")

    def name(self, role: str) -> str:
        return f"{self.prefix}.{role}"

    @property
    def frames(self) -> str:
        return self.name("frames")

    @property
    def hops(self) -> str:
        return self.name("hops")

    @property
    def hypotheses(self) -> str:
        return self.name("hypotheses")

    @property
    def transcripts(self) -> str:
        return self.name("transcripts")

    @property
    def latency(self) -> str:
        return self.name("latency")

    @property
    def control(self) -> str:
        return self.name("control")

    @property
    def probe(self) -> str:
        """The transport heartbeats of :class:`ProbeSettings` (one partition, key = prober id)."""
        return self.name("probe")

    def dead_letter(self, source_topic: str) -> str:
        """Each consumed topic has its own dead-letter topic."""
        return f"{source_topic}.dlq"


class AudioSettings(Section):
    """Stage A (20 ms ingress frames) and stage B (160 ms hops over a rolling window)."""

    frame_ms: int = Field(20, gt=0)
    hop_ms: int = Field(160, gt=0)
    window_secs: float = Field(1.28, description="Rolling window at full quality.")
    min_window_secs: float = Field(0.96, description="Smallest window the controller may shrink to.")
    sample_rate: int = Field(16000, description="Model input rate; 8 kHz input is resampled.")
    reorder_tolerance_frames: int = Field(
        4, ge=0, description="Frames a late frame may trail the newest one and still be put in order."
    )
    idle_timeout_s: float = Field(30.0, gt=0, description="A session with no frames this long is expired.")

    @model_validator(mode="after")
    def _check(self) -> AudioSettings:
        if self.hop_ms % self.frame_ms:
            raise ValueError("hop_ms must be a multiple of frame_ms")
        if not 0 < self.min_window_secs <= self.window_secs:
            raise ValueError("need 0 < min_window_secs <= window_secs")
        return self

    @property
    def frames_per_hop(self) -> int:
        return self.hop_ms // self.frame_ms


class WorkerSettings(Section):
    """Micro-batching protects p95: a short cap, a small batch, one batch in flight."""

    max_latency_ms: float = Field(20.0, ge=0, description="Longest the first hop of a batch waits.")
    max_batch_size: int = Field(8, ge=1)
    active_session_horizon_ms: float = Field(
        320.0,
        ge=0,
        description="A session whose latest hop arrived this recently is active; a batch holding a hop of every "
        "active session closes without waiting for the cap. Two 160 ms hop periods: one late hop does not end it.",
    )
    hop_arrival_slack_ms: float = Field(
        20.0,
        ge=0,
        description="Jitter allowed on a session's next hop (due one hop period after its last): a batch waits "
        "only for sessions whose next hop is due before the batch's deadline.",
    )
    coalesce_stale_hops: bool = Field(
        True, description="Skip a non-final hop when a newer hop of its session is already waiting."
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    torch_threads: int | None = Field(
        1,
        ge=1,
        description="torch intra-op threads; None = torch default. One: on the 2-core box two threads fought the "
        "broker and the consuming thread and raised the worker's queue_wait p95 (~29 -> ~45 ms, 10 sessions).",
    )
    fault_slowdown: float = Field(
        1.0, ge=1.0, description="TEST KNOB: multiplies inference time for overload experiments."
    )
    worker_id: str | None = Field(None, description="Defaults to host:pid.")
    beam: int = Field(4, description="Beam width until the controller says otherwise.")
    checkpoint: str | None = Field(None, description="Recognizer checkpoint file; None = the shipped one.")


class AssemblerSettings(Section):
    """Stitching hypotheses into transcripts (see pipeline/stitching.py for the rules)."""

    emit_interval_ms: int = Field(160, gt=0, description="Partial emit cadence at full quality.")
    throttled_emit_interval_ms: int = Field(320, gt=0, description="Partial emit cadence when throttled.")
    endpoint_silence_ms: int = Field(600, gt=0, description="Silence that closes a final segment.")
    agreement_tolerance_ms: float = Field(
        200.0, gt=0, description="Two hops agree on a word when its start differs by at most this."
    )
    stable_after_ms: float = Field(
        640.0, gt=0, description="A word that ended this long before the window's end is committed."
    )
    idle_timeout_s: float = Field(
        45.0, gt=0, description="No hypothesis this long closes a session (longer than the windower's idle expiry)."
    )
    closed_retention_s: float = Field(
        60.0, ge=0, description="A closed session is remembered this long to ignore late duplicates."
    )


class ControllerSettings(Section):
    """The degradation ladder's triggers: sliding-window queue_wait p95 first, e2e p95 as the backstop."""

    window_s: float = Field(10.0, gt=0, description="Sliding window of latency events.")
    tick_s: float = Field(0.5, gt=0, description="How often the controller re-evaluates.")
    min_events: int = Field(20, ge=1, description="Fewer events in the window -> no decision.")
    raise_queue_wait_ms: tuple[float, ...] = Field(
        (60.0, 120.0, 200.0, 250.0, 300.0),
        description="queue_wait p95 above entry i raises the level to at least i+1 (mission: 120 ms -> "
        "window 0.96 s at level 2; 200 ms -> emit 320 ms + window 0.96 s + beam 2 at level 3).",
    )
    e2e_p95_target_ms: float = Field(500.0, gt=0)
    e2e_raise_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="e2e p95 of hops cut at the current level above this fraction of the target -> one level up "
        "(queue_wait is the early signal; this backstop acts when the target itself is broken).",
    )
    raise_hold_s: float = Field(
        2.0, ge=0, description="An e2e-driven raise waits this long after the last change to let it take effect."
    )
    recover_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Step down only when queue_wait p95 is below this fraction of the level's threshold...",
    )
    e2e_recover_fraction: float = Field(
        0.7, gt=0, lt=1, description="...and e2e p95 is below this fraction of its target..."
    )
    recover_hold_s: float = Field(5.0, ge=0, description="...both sustained for this long.")

    @model_validator(mode="after")
    def _check(self) -> ControllerSettings:
        thresholds = self.raise_queue_wait_ms
        if not thresholds or any(b <= a for a, b in itertools.pairwise(thresholds)):
            raise ValueError("raise_queue_wait_ms must be a non-empty, strictly increasing tuple")
        if self.e2e_recover_fraction >= self.e2e_raise_fraction:
            raise ValueError("e2e_recover_fraction must be below e2e_raise_fraction")
        return self


class ProbeSettings(Section):
    """The broker probe: per interval, a heartbeat produced and read back and a data partition's offset lookup."""

    enabled: bool = Field(True, description="The controller runs a prober and holds its level on a transport alarm.")
    interval_ms: float = Field(1000.0, gt=0, description="One heartbeat and one offset lookup per interval.")
    window_s: float = Field(
        30.0,
        gt=0,
        description="Measurements of this long count. 30 per series: one slow heartbeat does not move the p95 "
        "(it interpolates below the largest of 21 or more), two do.",
    )
    min_samples: int = Field(10, ge=1, description="Fewer measurements of a series in the window -> it is not judged.")
    slow_p95_ms: float = Field(
        50.0,
        gt=0,
        description="Heartbeat produce->consume p95 above this raises the transport alarm. A healthy broker "
        "answers in a few ms plus the fetch wait (the embedded one ~8 ms p95 at fetch wait 10 ms); 50 ms is "
        "most of the first queue_wait threshold (60 ms) spent in one produce->consume hop.",
    )
    slow_lookup_p95_ms: float = Field(
        25.0,
        gt=0,
        description="Offset-lookup p95 on the frames/hops/hypotheses partitions above this raises the alarm too. "
        "The embedded broker lists every stored batch of a partition for a lookup as for a fetch, so this "
        "sees the slowdown of busy partitions that the light heartbeat partition does not: measured at 500 "
        "records/s, lookups went 2 -> 25 -> 90 ms p95 (fresh, 40 s, 90 s) while consumers of those partitions "
        "went 6 -> 35 -> 120 ms and the heartbeat only 7 -> 12 -> 27 ms. Apache Kafka answers in ~1 ms.",
    )
    clear_fraction: float = Field(
        0.8, gt=0, lt=1, description="The alarm ends when every p95 is below this fraction of its threshold."
    )


class MetricsSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, description="/metrics port; 0 picks a free one (logged at start).")


class BrokerSettings(Section):
    """The embedded Tansu broker used for development, tests and the demo."""

    host: str = "127.0.0.1"
    port: int = Field(19092, gt=0, lt=65536)
    start_timeout_s: float = Field(15.0, gt=0)
    topic_partitions: int = Field(
        1,
        ge=1,
        description="Partitions per topic when the demo runs on the embedded broker: it lists every stored batch "
        "of a partition on each fetch, and one partition per topic stores the fewest batches (one per producer "
        "tick). The demo runs one instance of each service, so it loses no parallelism.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOPLINE_", env_nested_delimiter="__", extra="ignore", frozen=True)

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    audio: AudioSettings = AudioSettings()
    worker: WorkerSettings = WorkerSettings()
    assembler: AssemblerSettings = AssemblerSettings()
    controller: ControllerSettings = ControllerSettings()
    probe: ProbeSettings = ProbeSettings()
    metrics: MetricsSettings = MetricsSettings()
    broker: BrokerSettings = BrokerSettings()
    log_level: str = "INFO"

    def override(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some values replaced, e.g. ``override(kafka={"bootstrap_servers": x})``.

        Each changed section is validated again as a whole (``Field`` bounds and the section's own
        checks), so a bad value raises pydantic's ``ValidationError`` located as ``section.field``;
        ``self`` is left as it was.
        """
        update: dict[str, Section] = {}
        for name, changes in sections.items():
            current = getattr(self, name, None)
            if not isinstance(current, Section):
                raise ValueError(f"no settings section {name!r}")
            section = type(current)
            unknown = sorted(set(changes) - set(section.model_fields))
            if unknown:
                raise ValueError(f"no setting {name}.{unknown[0]}")
            try:
                update[name] = section.model_validate({**current.model_dump(), **changes})
            except ValidationError as exc:
                raise ValidationError.from_exception_data(
                    type(self).__name__,
                    [
                        {"type": e["type"], "loc": (name, *e["loc"]), "input": e["input"], "ctx": e.get("ctx", {})}
                        for e in exc.errors()
                    ],
                ) from None
        return self.model_copy(update=update)

    def to_env(self) -> dict[str, str]:
        """These settings as ``HOPLINE_*`` variables, so child services run with exactly them."""
        env = {}
        for section, values in self.model_dump(mode="json").items():
            if isinstance(values, dict):
                for key, value in values.items():
                    if value is not None:
                        encoded = json.dumps(value) if isinstance(value, list | dict) else str(value)
                        env[f"HOPLINE_{section.upper()}__{key.upper()}"] = encoded
            else:
                env[f"HOPLINE_{section.upper()}"] = str(values)
        return env

    @property
    def app_id(self) -> str:
        """Faust app / consumer-group base name, unique per topic prefix."""
        return self.topics.prefix
