import time

import pytest

from pipeline import contracts
from pipeline.control.follower import ControlFollower
from pipeline.control.ladder import command_record, ladder
from pipeline.kafka.clients import make_producer
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.integration


def command(level: int, settings_knobs: tuple, scope: str = "global") -> bytes:
    record = command_record(level, settings_knobs[level], "test", {"queue_wait_ms_p95": 1.0}, scope)
    return contracts.CONTROL.encode(record)


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_follower_sees_history_then_live_commands_of_its_scope(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    steps = ladder(settings)
    producer = make_producer(settings)
    producer.produce(settings.topics.control, key=b"global", value=command(2, steps))
    producer.produce(settings.topics.control, key=b"global", value=b"not avro")
    producer.flush(5)
    follower = ControlFollower(settings).start()
    try:
        assert wait_for(lambda: follower.knobs.level == 2)
        assert follower.knobs.window_secs == settings.audio.min_window_secs
        producer.produce(settings.topics.control, key=b"other-scope", value=command(5, steps, "other-scope"))
        producer.produce(settings.topics.control, key=b"global", value=command(4, steps))
        producer.flush(5)
        assert wait_for(lambda: follower.knobs.level == 4)
        assert follower.knobs.beam == 1 and follower.knobs.admit_new_sessions
    finally:
        follower.close()
