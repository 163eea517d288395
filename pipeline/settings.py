"""One settings tree for CLI, services and tests.

Every value can be set from the environment with the ``HOPLINE_`` prefix and ``__`` between
levels, e.g. ``HOPLINE_KAFKA__BOOTSTRAP_SERVERS=10.0.0.5:9092`` or
``HOPLINE_AUDIO__WINDOW_SECS=0.96``. Defaults are the mission's numbers.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    model_validator,
)
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
    delivery_timeout_ms: int = Field(
        120_000,
        ge=1000,
        description="How long a produced record may wait for the broker's acknowledgement before its delivery "
        "fails and the service's retry or replay path takes over (librdkafka message.timeout.ms; faust's "
        "producer_request_timeout, per request). Kafka's own default; tests lower it to provoke failures.",
    )
    statistics_interval_ms: int = Field(
        1000, ge=0, description="librdkafka statistics interval: feeds the produce-batch counters (0 = off)."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every client (confluent-kafka and faust) talks to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism; required with SASL_PLAINTEXT and SASL_SSL."
    )
    sasl_username: str | None = Field(None, description="SASL principal; required with SASL_*.")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password; required with SASL_*. Masked in repr, str and logs."
    )
    ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) that signed the brokers' certificates; None = the system's CAs."
    )
    ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Private key (PEM) of ssl_certfile.")

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        credentials = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username,
            "sasl_password": self.sasl_password.get_secret_value() if self.sasl_password else None,
        }
        if sasl:
            missing = [name for name, value in credentials.items() if not value]
            if missing:
                raise ValueError(f"security_protocol {self.security_protocol} needs {', '.join(missing)}")
        elif any(credentials.values()):
            # A PLAINTEXT/SSL client would silently not send them: a misconfiguration, not a default.
            raise ValueError(f"sasl_* settings need security_protocol SASL_*, not {self.security_protocol}")
        files = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile}
        given = {name: path for name, path in files.items() if path is not None}
        if given and not tls:
            raise ValueError(f"ssl_* files need security_protocol SSL or SASL_SSL, not {self.security_protocol}")
        # Here, not with pydantic's FilePath: its custom error type cannot be re-raised by Settings.override.
        for name, path in given.items():
            if not path.is_file():
                raise ValueError(f"{name} {path} is not a file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (mutual TLS needs both)")
        return self

    @field_serializer("sasl_password", when_used="json")
    def _reveal_password(self, password: SecretStr | None) -> str | None:
        """JSON dumps carry the password so :meth:`Settings.to_env` hands it to child services."""
        return password.get_secret_value() if password else None


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

    @property
    def capabilities(self) -> str:
        """What each degradation knob saves on each worker (key = worker id, compacted)."""
        return self.name("capabilities")

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
    idle_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A session with no frames this long, while frames keep coming on its partition, is expired.",
    )
    max_gap_frames: int = Field(
        50,
        ge=0,
        description="Most missing frames filled with silence at once (50 = 1 s). A longer jump in seq is an outage, "
        "not a network gap: the session skips ahead to the new frame without filling, so one frame with a wild seq "
        "cannot make megabytes of silent hops.",
    )
    ended_retention_s: float = Field(
        600.0,
        ge=0,
        description="An ended or expired session's counters are kept this long (idle time, as for idle_timeout_s) "
        "after it expired, so a frame that comes later resumes its hop_seq instead of starting again at 0.",
    )
    max_capture_age_ms: float = Field(
        10000.0,
        gt=0,
        description="A frame's capture_ts_ms (the producer's clock) more than this before the windower received it "
        "is taken as a clock error and clamped to 'captured just now': a bad client clock must not fake latency. "
        "Far above any real transport delay, so only broken clocks and backlogs past it are clamped.",
    )
    max_capture_lead_ms: float = Field(
        1000.0,
        gt=0,
        description="A capture_ts_ms more than this after the windower received the frame is clamped the same way: "
        "a frame cannot arrive before it was captured, but hosts' clocks drift, so a little lead is tolerated.",
    )

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
    fault_slowdown_file: str | None = Field(
        None,
        description="TEST KNOB: a file holding the current slowdown factor, re-read every half second (overrides "
        "fault_slowdown while it exists), so a benchmark can slow the worker for a while and let it recover.",
    )
    worker_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="Defaults to host:pid. Printable ASCII without spaces, at most 128 characters: it is a Kafka "
        "key, part of the producer's client id and a label on every hypothesis.",
    )
    beam: int = Field(4, description="Beam width until the controller says otherwise.")
    recognizer: Literal["torch", "onnx"] = Field(
        "torch",
        description="Recognizer backend for the worker, `hopline asr transcribe|eval` and the ASR benches: torch = "
        "the project's checkpoint (full + int8 tiers); onnx = an exported CTC model run with onnxruntime, with its "
        "feature spec and tokens file next to it (docs/byo-model.md; one tier, full).",
    )
    checkpoint: str | None = Field(
        None,
        description="The recognizer's model file: a torch checkpoint (None = the shipped one) or, with recognizer "
        "onnx, the .onnx file (required; its model.json spec sits next to it).",
    )


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
    max_segment_words: int = Field(
        100, ge=1, description="A segment with this many committed words is closed early (bounds each state write)."
    )
    max_sessions: int = Field(
        10_000, ge=1, description="Open sessions kept; a new one beyond it closes the least recently heard."
    )


class ControllerSettings(Section):
    """The degradation ladder's triggers: sliding-window queue_wait p95 first, e2e p95 as the backstop."""

    window_s: float = Field(10.0, gt=0, description="Sliding window of latency events.")
    tick_s: float = Field(0.5, gt=0, description="How often the controller re-evaluates.")
    min_events: int = Field(20, ge=1, description="Fewer events in the window -> no decision.")
    raise_queue_wait_ms: tuple[float, ...] = Field(
        (120.0, 160.0, 200.0, 250.0, 300.0),
        description="queue_wait p95 above entry i raises the level to at least i+1 (mission: 120 ms -> "
        "window 0.96 s at level 2; 200 ms -> emit 320 ms + window 0.96 s + beam 2 at level 3). The first two "
        "entries sit above the queueing that sessions starting together cause at base load (a batch of 8, then "
        "the rest waits for it: 60-115 ms p95 for 10 sessions on the 2-core box), so base load is neither "
        "degraded for it nor flaps between levels 0 and 1; the mission's 120 ms step comes first.",
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
    load_window_s: float = Field(
        3.0,
        gt=0,
        description="The worker load (busy fraction and skipped-hop ratio) is taken over this many seconds of "
        "hops cut at the current level: short, so a raise follows an overload within a few seconds.",
    )
    raise_load: float = Field(
        0.95,
        gt=0,
        description="Offered load (busy fraction x (1 + skipped/run hops)) above this raises to the lowest "
        "worthwhile level predicted to bring it under target_load. Queueing cannot show overload once stale "
        "hops are coalesced (queue_wait stays near one hop period), the busy fraction and skips can.",
    )
    target_load: float = Field(0.85, gt=0, description="A raise aims for at most this predicted offered load.")
    recover_load: float = Field(
        0.8,
        gt=0,
        description="Step down only when the offered load predicted at the lower level stays below this (with the "
        "queue_wait and e2e bounds above): hysteresis against stepping straight back into overload.",
    )
    min_level_saving: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="A level saving less compute than this fraction of the level below it is skipped: it would "
        "cost accuracy for nearly nothing. 10%: a worker's start-up measurement of a knob moves by ~5% run to run "
        "on a busy 2-core CPU (beam 2 measured 2-9%).",
    )

    @model_validator(mode="after")
    def _check(self) -> ControllerSettings:
        thresholds = self.raise_queue_wait_ms
        if not thresholds or any(b <= a for a, b in itertools.pairwise(thresholds)):
            raise ValueError("raise_queue_wait_ms must be a non-empty, strictly increasing tuple")
        if self.e2e_recover_fraction >= self.e2e_raise_fraction:
            raise ValueError("e2e_recover_fraction must be below e2e_raise_fraction")
        if not self.recover_load < self.target_load < self.raise_load:
            raise ValueError("need recover_load < target_load < raise_load")
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


class GatewaySettings(Section):
    """``hopline gateway``, the WebSocket ingress: where it listens, who may stream, and its limits."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, lt=65536, description="0 picks a free port (logged at start).")
    tokens: dict[str, str] = Field(
        default_factory=dict,
        description='Tenant -> bearer token, e.g. HOPLINE_GATEWAY__TOKENS=\'{"acme":"s3cret"}\'.',
    )
    tokens_file: str | None = Field(
        None, description="A JSON object of tenant -> token, read at start and merged over ``tokens``."
    )
    max_message_bytes: int = Field(
        65536, gt=0, description="Largest WebSocket message (2 s of 16 kHz PCM16); a larger one closes with 1009."
    )
    max_realtime_factor: float = Field(
        2.0, gt=0, description="A session sending audio faster than this many seconds per second is closed (1008)."
    )
    burst_s: float = Field(
        1.0, gt=0, description="Seconds of audio a session may run ahead of that rate (jitter, a buffered start)."
    )
    max_sessions: int = Field(500, ge=1, description="Live sessions per replica; one more is refused (1013).")
    max_sessions_per_tenant: int = Field(100, ge=1, description="Live sessions per tenant on one replica (1013).")
    max_connections: int = Field(
        2000, ge=1, description="Open WebSockets per replica: sessions, subscriptions and those not started yet."
    )
    start_timeout_s: float = Field(10.0, gt=0, description="A socket must authenticate and start within this (1008).")
    idle_timeout_s: float = Field(
        10.0,
        gt=0,
        description="No audio this long ends the session (end-of-stream frame) and closes the socket (1000). Below "
        "the windower's audio.idle_timeout_s, so the session ends with a final instead of expiring.",
    )
    end_linger_s: float = Field(
        10.0,
        ge=0,
        description='After {"event":"end"} a /v1/stream socket stays open this long for the last transcripts.',
    )
    transcript_backlog: int = Field(
        256, ge=1, description="Transcript messages queued for one socket; a client this far behind is closed (1008)."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HOPLINE_", env_nested_delimiter="__", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    audio: AudioSettings = AudioSettings()
    worker: WorkerSettings = WorkerSettings()
    assembler: AssemblerSettings = AssemblerSettings()
    controller: ControllerSettings = ControllerSettings()
    probe: ProbeSettings = ProbeSettings()
    metrics: MetricsSettings = MetricsSettings()
    broker: BrokerSettings = BrokerSettings()
    gateway: GatewaySettings = GatewaySettings()
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
                    hide_input=True,
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
