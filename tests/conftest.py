"""Shared fixtures: one real embedded broker per test session, isolated topics per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from pipeline.kafka.broker import EmbeddedBroker
from pipeline.kafka.topics import create_topics
from pipeline.settings import KafkaSettings, Settings, TopicSettings

SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The Tansu broker on a free loopback port; memory only, gone after the session."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def make_settings(broker: EmbeddedBroker) -> SettingsFactory:
    """Settings pointing at the test broker, with a fresh uuid topic prefix whose topics exist."""

    def factory(partitions: int = 3, **overrides: object) -> Settings:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
            topics=TopicSettings(prefix=f"t{uuid.uuid4().hex[:12]}", partitions=partitions),
            **overrides,  # type: ignore[arg-type]
        )
        settings.metrics.enabled = False
        create_topics(settings)
        return settings

    return factory
