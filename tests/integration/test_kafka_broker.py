import pytest
from confluent_kafka.admin import AdminClient

from pipeline.kafka.clients import make_consumer, make_producer
from pipeline.kafka.topics import partition_count, pipeline_topics
from tests.plugins.broker import SettingsFactory

pytestmark = pytest.mark.integration


def test_topics_exist_with_their_partition_counts(make_settings: SettingsFactory) -> None:
    settings = make_settings(partitions=3)
    metadata = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers}).list_topics(timeout=5)
    for name in pipeline_topics(settings):
        assert len(metadata.topics[name].partitions) == partition_count(settings, name)
        single = name in (settings.topics.probe, settings.topics.capabilities)
        assert partition_count(settings, name) == (1 if single else 3)


def test_keyed_message_round_trip(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    producer = make_producer(settings)
    producer.produce(settings.topics.frames, key=b"s1", value=b"v")
    assert producer.flush(5) == 0
    consumer = make_consumer(settings, "roundtrip")
    consumer.subscribe([settings.topics.frames])
    try:
        message = None
        for _ in range(100):
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                break
        assert message is not None and message.value() == b"v" and message.key() == b"s1"
    finally:
        consumer.close()
