"""The pipeline's topics: names and configs, created up front with matching partition counts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from pipeline.errors import CliError
from pipeline.kafka.clients import make_admin
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def pipeline_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Every pipeline topic with its topic-level config.

    Frames, hops, hypotheses, transcripts and latency events are keyed by session id and
    share one partition count so a session sits on the same partition number everywhere.
    The control topic is compacted: only the newest command per scope matters; its dead-letter
    topic is not (every rejected command is kept). The probe topic carries the broker probe's
    heartbeats, the compacted capabilities topic each worker's measured knob savings (see
    :func:`partition_count` for their one partition). Every topic a service reads has a dead-letter
    topic, but the probe's: a prober reads back only its own heartbeats.
    """
    topics = settings.topics
    keyed = [topics.frames, topics.hops, topics.hypotheses, topics.transcripts, topics.latency]
    consumed = [*keyed, topics.control, topics.capabilities]
    dead_letters = [topics.dead_letter(t) for t in consumed]
    spec: dict[str, dict[str, str]] = {name: {} for name in keyed + dead_letters}
    spec[topics.control] = {"cleanup.policy": "compact"}
    spec[topics.probe] = {}
    spec[topics.capabilities] = {"cleanup.policy": "compact"}
    return spec


def partition_count(settings: Settings, name: str) -> int:
    """Partitions a pipeline topic is created with: the common count, but one for the probe and capabilities.

    A heartbeat a second per prober, or a record per worker start, needs no spreading, and their
    readers then fetch one small partition.
    """
    return 1 if name in (settings.topics.probe, settings.topics.capabilities) else settings.topics.partitions


def create_topics(settings: Settings, timeout_s: float = 10.0, extra: Iterable[str] = ()) -> list[str]:
    """Create every pipeline topic that does not exist yet (and ``<prefix>.<role>`` for each ``extra``
    role, plain); returns the names created."""
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise CliError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}") from exc
    wanted = [
        NewTopic(
            name,
            num_partitions=partition_count(settings, name),
            replication_factor=settings.kafka.replication_factor,
            config=config,
        )
        for name, config in {**pipeline_topics(settings), **{settings.topics.name(r): {} for r in extra}}.items()
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise CliError(f"cannot create topic {name}: {exc}") from exc
    log.info("created topics: %s", ", ".join(created))
    return created


def fresh_topics(settings: Settings, bootstrap_servers: str, extra: Iterable[str] = (), **sections: Any) -> Settings:
    """``settings`` on ``bootstrap_servers`` with a new ``bench<uuid>`` topic prefix whose topics exist.

    For benchmarks: every run gets its own topics. ``sections`` are further overrides
    (e.g. ``metrics={"enabled": False}``); ``extra`` as for :func:`create_topics`.
    """
    topics = {"prefix": f"bench{uuid.uuid4().hex[:8]}", **sections.pop("topics", {})}
    fresh = settings.override(kafka={"bootstrap_servers": bootstrap_servers}, topics=topics, **sections)
    create_topics(fresh, extra=extra)
    return fresh
