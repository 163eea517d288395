"""Fixtures: one real embedded broker per test session, isolated topics per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline.kafka.broker import EmbeddedBroker
from pipeline.kafka.topics import create_topics
from pipeline.settings import Settings

SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The Tansu broker on a free loopback port; memory only, gone after the session."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def make_settings(broker: EmbeddedBroker) -> SettingsFactory:
    """Settings pointing at the test broker: see :func:`settings_factory`."""
    return settings_factory(broker.bootstrap_servers)


def settings_factory(bootstrap_servers: str) -> SettingsFactory:
    """Settings pointing at ``bootstrap_servers``, with a fresh uuid topic prefix whose topics exist.

    ``make_settings(partitions=2, worker={"max_batch_size": 4}, kafka={"session_timeout_ms": 2000})``:
    each keyword names a settings section and gives the values to change (a dict, or a section
    model whose explicitly set values count), applied with :meth:`Settings.override`. Metrics are
    off unless a test turns them on.
    """

    def factory(partitions: int = 3, **sections: Mapping[str, Any] | BaseModel) -> Settings:
        changes = {
            name: section.model_dump(exclude_unset=True) if isinstance(section, BaseModel) else dict(section)
            for name, section in sections.items()
        }
        defaults: dict[str, dict[str, Any]] = {
            "kafka": {"bootstrap_servers": bootstrap_servers},
            "topics": {"prefix": f"t{uuid.uuid4().hex[:12]}", "partitions": partitions},
            "metrics": {"enabled": False},
        }
        for name, values in defaults.items():
            changes[name] = {**values, **changes.get(name, {})}
        settings = Settings().override(**changes)
        create_topics(settings)
        return settings

    return factory
