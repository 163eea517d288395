"""Settings are frozen; overrides make a validated copy."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.settings import ControllerSettings, Settings, WorkerSettings


def test_settings_and_their_sections_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.worker.max_batch_size = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        settings.log_level = "DEBUG"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        settings.worker = WorkerSettings()  # type: ignore[misc]


def test_override_returns_a_copy_and_leaves_the_original_untouched() -> None:
    settings = Settings()
    changed = settings.override(kafka={"bootstrap_servers": "kafka:9092"}, topics={"prefix": "p", "partitions": 2})
    assert changed.kafka.bootstrap_servers == "kafka:9092"
    assert (changed.topics.frames, changed.topics.partitions) == ("p.frames", 2)
    assert changed.kafka.fetch_wait_max_ms == settings.kafka.fetch_wait_max_ms, "other values are kept"
    assert changed.worker is settings.worker, "sections not named are shared, not copied"
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert (settings.topics.prefix, settings.topics.partitions) == ("hopline", 4)
    assert settings.override() == settings


def test_override_checks_field_bounds_and_names_the_setting() -> None:
    settings = Settings()
    with pytest.raises(ValidationError) as info:
        settings.override(worker={"max_batch_size": 0})
    (error,) = info.value.errors()
    assert error["loc"] == ("worker", "max_batch_size") and error["type"] == "greater_than_equal"
    with pytest.raises(ValidationError):
        settings.override(topics={"partitions": 0})
    with pytest.raises(ValidationError):
        settings.override(worker={"fault_slowdown": 0.5})
    assert settings.worker.max_batch_size == 8


def test_override_runs_the_sections_own_checks() -> None:
    settings = Settings()
    with pytest.raises(ValidationError, match="min_window_secs"):
        settings.override(audio={"window_secs": 0.5})
    with pytest.raises(ValidationError, match="strictly increasing"):
        settings.override(controller={"raise_queue_wait_ms": (120.0, 60.0)})
    assert settings.override(audio={"window_secs": 0.96}).audio.window_secs == 0.96


def test_override_refuses_unknown_sections_and_settings() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="no settings section 'wokrer'"):
        settings.override(wokrer={"max_batch_size": 2})
    with pytest.raises(ValueError, match=r"no setting worker\.max_batch"):
        settings.override(worker={"max_batch": 2})
    with pytest.raises(ValueError, match="no settings section 'log_level'"):
        settings.override(log_level={"x": 1})


def test_section_models_validate_like_before() -> None:
    assert ControllerSettings(window_s=2.0).window_s == 2.0
    with pytest.raises(ValidationError):
        ControllerSettings(e2e_recover_fraction=1.0)


def test_a_bad_cli_override_is_one_line_and_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    assert main(["worker", "--max-batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "hopline: error: invalid setting worker.max_batch_size: Input should be greater than or equal to 1\n"


@pytest.mark.parametrize("worker_id", ["", "two words", "x" * 129, "tab\there"])
def test_a_worker_id_is_short_printable_ascii(worker_id: str) -> None:
    with pytest.raises(ValueError, match=r"worker\.worker_id"):
        Settings().override(worker={"worker_id": worker_id})
    assert Settings().override(worker={"worker_id": "gpu-7:1234"}).worker.worker_id == "gpu-7:1234"


def test_the_delivery_timeout_reaches_librdkafka_and_faust() -> None:
    from pipeline.kafka.clients import producer_config
    from pipeline.kafka.faust_app import make_app

    settings = Settings().override(kafka={"delivery_timeout_ms": 1500})
    assert producer_config(settings)["message.timeout.ms"] == 1500
    assert make_app(settings, "timeout-test").conf.producer_request_timeout == 1.5
    assert producer_config(Settings())["message.timeout.ms"] == 120_000, "Kafka's default delivery timeout"
