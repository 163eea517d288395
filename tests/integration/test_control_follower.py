"""The control follower (pipeline/control/follower.py) on the compacted control topic."""

import pytest

from pipeline.control.follower import ControlFollower
from pipeline.kafka.clients import make_producer
from tests.plugins.broker import SettingsFactory
from tests.plugins.builders import control_command
from tests.plugins.kafka import wait_for

pytestmark = pytest.mark.integration


def test_follower_sees_history_then_live_commands_of_its_scope(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    metrics = {"queue_wait_ms_p95": 1.0}

    def command(level: int, scope: str = "global") -> bytes:
        return control_command(settings, level, seq=level, metrics=metrics, scope=scope).encode()

    producer = make_producer(settings)
    producer.produce(settings.topics.control, key=b"global", value=command(2))
    producer.produce(settings.topics.control, key=b"global", value=b"not avro")
    producer.flush(5)
    follower = ControlFollower(settings).start()
    try:
        assert wait_for(lambda: follower.knobs.level == 2)
        assert follower.knobs.window_secs == settings.audio.min_window_secs
        producer.produce(settings.topics.control, key=b"other-scope", value=command(5, "other-scope"))
        producer.produce(settings.topics.control, key=b"global", value=command(4))
        producer.flush(5)
        assert wait_for(lambda: follower.knobs.level == 4)
        assert follower.knobs.beam == 1 and follower.knobs.admit_new_sessions
    finally:
        follower.close()
