"""The confluent-kafka clients every service builds: producer, group consumer and admin factories.

Everything in ``pipeline.kafka`` speaks plain Kafka and works unchanged against Apache Kafka and
the embedded broker; broker differences live in settings only. Topic creation is in ``topics``,
dead letters in ``dead_letters``, from-the-beginning readers in ``readers``.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from pipeline.kafka.produce_stats import PRODUCE_STATS
from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: librdkafka's own messages (connection errors, rebalances) go through Python logging like
#: everything else instead of straight to stderr; the client delivers them on poll/flush.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def security_config(settings: Settings) -> dict[str, str]:
    """``settings.kafka``'s security as librdkafka keys: the one mapping every confluent client uses."""
    kafka = settings.kafka
    config: dict[str, str] = {"security.protocol": kafka.security_protocol}
    if kafka.sasl_mechanism and kafka.sasl_username and kafka.sasl_password:
        config.update(
            {
                "sasl.mechanism": kafka.sasl_mechanism,
                "sasl.username": kafka.sasl_username,
                "sasl.password": kafka.sasl_password.get_secret_value(),
            }
        )
    files = {
        "ssl.ca.location": kafka.ssl_cafile,
        "ssl.certificate.location": kafka.ssl_certfile,
        "ssl.key.location": kafka.ssl_keyfile,
    }
    config.update({key: str(path) for key, path in files.items() if path is not None})
    return config


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Idempotent, low-linger producer keyed with murmur2 like the Java and aiokafka clients."""
    kafka = settings.kafka
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "enable.idempotence": True,
        "acks": kafka.acks if kafka.acks != "0" else "all",
        "linger.ms": kafka.linger_ms,
        "partitioner": kafka.partitioner,
        "compression.type": "none",
        "message.max.bytes": 4 * 1024 * 1024,
        "message.timeout.ms": kafka.delivery_timeout_ms,
        "logger": LIBRDKAFKA_LOG,
        **security_config(settings),
    }
    if kafka.statistics_interval_ms:
        config.update({"statistics.interval.ms": kafka.statistics_interval_ms, "stats_cb": stats_callback})
    config.update(overrides)
    return config


def stats_callback(payload: str) -> None:
    """librdkafka statistics -> this process's produce counters (delivered on ``poll``/``flush``)."""
    PRODUCE_STATS.on_librdkafka_stats(payload)


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Group consumer with manual commits (at-least-once) and a small fetch wait."""
    kafka = settings.kafka
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
        "fetch.min.bytes": 1,
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": kafka.heartbeat_interval_ms,
        "partition.assignment.strategy": "cooperative-sticky",
        "logger": LIBRDKAFKA_LOG,
        **security_config(settings),
    }
    config.update(overrides)
    return config


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer-group member; the caller subscribes (with its rebalance callbacks).

    Readers that need every partition from the beginning use :mod:`pipeline.kafka.readers` instead.
    """
    return Consumer(consumer_config(settings, group_id, **overrides))


def admin_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka.bootstrap_servers, **security_config(settings)}


def make_admin(settings: Settings) -> AdminClient:
    return AdminClient(admin_config(settings))
