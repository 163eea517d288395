"""Kafka TLS/SASL settings: validated once, mapped once for confluent-kafka and once for faust."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from pipeline.kafka.clients import admin_config, consumer_config, producer_config, security_config
from pipeline.kafka.faust_app import broker_credentials, make_app
from pipeline.settings import Settings

PASSWORD = "correct-horse-battery-staple"

#: A self-signed CA (EC P-256, valid to 2126) with its key: real PEM, so librdkafka and ``ssl`` load it.
CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBjDCCATGgAwIBAgIUbnG8NYJl8qJXaTK91c4vyGgOPGgwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPaG9wbGluZS10ZXN0LWNhMCAXDTI2MTIwMjE1NDg1NloYDzIx
MjYxMTA4MTU0ODU2WjAaMRgwFgYDVQQDDA9ob3BsaW5lLXRlc3QtY2EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAASN5tzW8stS0NbJvHtI8msMxX1FtGHox6LYwcw3
blFY4l+m0dCk7x0Qa6fbr1FzGr0yQeLcA7/AetsdEG3WuxU+o1MwUTAdBgNVHQ4E
FgQUpkjn05J3Ci64qN+oco1k0cM/+g0wHwYDVR0jBBgwFoAUpkjn05J3Ci64qN+o
co1k0cM/+g0wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEA04/+
A+MgYv97dmYFGrX56L5pf0lO8cUMYaMvzkx0iuACIQCMqOb/WQRgzi00E88sX0N/
D+WR5wEFo0voxHFXrFRcTA==
-----END CERTIFICATE-----
"""
KEY_PEM = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgrOIvtnernqKpNEUb
ngMz8bm02ABYKE0csr4yO08YS/GhRANCAASN5tzW8stS0NbJvHtI8msMxX1FtGHo
x6LYwcw3blFY4l+m0dCk7x0Qa6fbr1FzGr0yQeLcA7/AetsdEG3WuxU+
-----END PRIVATE KEY-----
"""


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, Path]:
    """CA bundle, client certificate and key on disk (the CA doubles as the client certificate)."""
    ca, key = tmp_path / "ca.pem", tmp_path / "client.key"
    ca.write_text(CA_PEM)
    key.write_text(KEY_PEM)
    return {"ssl_cafile": ca, "ssl_certfile": ca, "ssl_keyfile": key}


def kafka(**values: Any) -> Settings:
    # An unreachable port: building a client must not depend on a broker.
    return Settings().override(kafka={"bootstrap_servers": "127.0.0.1:1", **values})


def sasl(protocol: str, mechanism: str, **values: Any) -> Settings:
    return kafka(
        security_protocol=protocol, sasl_mechanism=mechanism, sasl_username="worker", sasl_password=PASSWORD, **values
    )


def ca_names(context: ssl.SSLContext) -> list[str]:
    subjects: list[Any] = [cert["subject"] for cert in context.get_ca_certs()]
    return [value for subject in subjects for rdn in subject for key, value in rdn if key == "commonName"]


def test_plaintext_is_the_default_and_adds_nothing_but_the_protocol() -> None:
    settings = kafka()
    assert security_config(settings) == {"security.protocol": "PLAINTEXT"}
    assert broker_credentials(settings) is None
    assert credentials_to_aiokafka_auth(broker_credentials(settings)) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_maps_to_librdkafka_keys_and_faust_sasl_credentials(mechanism: str) -> None:
    settings = sasl("SASL_PLAINTEXT", mechanism)
    assert security_config(settings) == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": "worker",
        "sasl.password": PASSWORD,
    }
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials_to_aiokafka_auth(credentials) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "worker",
        "sasl_plain_password": PASSWORD,
        "ssl_context": None,
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_adds_the_ca_to_both_clients(mechanism: str, pem_files: dict[str, Path]) -> None:
    settings = sasl("SASL_SSL", mechanism, ssl_cafile=pem_files["ssl_cafile"])
    assert security_config(settings) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": mechanism,
        "sasl.username": "worker",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(pem_files["ssl_cafile"]),
    }
    auth = credentials_to_aiokafka_auth(broker_credentials(settings))
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["sasl_plain_password"]) == (
        "SASL_SSL",
        mechanism,
        PASSWORD,
    )
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert ca_names(context) == ["hopline-test-ca"], "the configured CA, not only the system's"


def test_ssl_with_a_client_certificate_maps_every_file(pem_files: dict[str, Path]) -> None:
    settings = kafka(security_protocol="SSL", **pem_files)
    assert security_config(settings) == {
        "security.protocol": "SSL",
        "ssl.ca.location": str(pem_files["ssl_cafile"]),
        "ssl.certificate.location": str(pem_files["ssl_certfile"]),
        "ssl.key.location": str(pem_files["ssl_keyfile"]),
    }
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SSL" and ca_names(auth["ssl_context"]) == ["hopline-test-ca"]


def test_ssl_without_files_trusts_the_system_cas() -> None:
    settings = kafka(security_protocol="SSL")
    assert security_config(settings) == {"security.protocol": "SSL"}
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED and credentials.context.check_hostname


def test_every_confluent_client_and_the_faust_app_get_the_security(pem_files: dict[str, Path]) -> None:
    settings = sasl("SASL_SSL", "SCRAM-SHA-512", ssl_cafile=pem_files["ssl_cafile"])
    expected = security_config(settings)
    for config in (producer_config(settings), consumer_config(settings, "group"), admin_config(settings)):
        assert expected.items() <= config.items()
    # librdkafka checks the keys and loads the CA when a client is built: a misspelt key or bad PEM fails here.
    Producer(producer_config(settings, **{"statistics.interval.ms": 0})).flush(0)
    Consumer(consumer_config(settings, "group")).close()
    AdminClient(admin_config(settings))
    app = make_app(settings, "security-test")
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    assert app.conf.broker_credentials.mechanism.value == "SCRAM-SHA-512"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism, sasl_username, sasl_password"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "worker"},
            "needs sasl_password",
        ),
        ({"sasl_username": "worker", "sasl_password": PASSWORD}, "need security_protocol SASL_"),
        ({"security_protocol": "SSL", "sasl_mechanism": "SCRAM-SHA-256"}, "need security_protocol SASL_"),
    ],
)
def test_sasl_settings_are_checked(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        kafka(**values)


def test_ssl_files_are_checked(pem_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"ssl_cafile \S*missing\.pem is not a file"):
        kafka(security_protocol="SSL", ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(ValidationError, match="go together"):
        kafka(security_protocol="SSL", ssl_certfile=pem_files["ssl_certfile"])
    with pytest.raises(ValidationError, match="need security_protocol SSL or SASL_SSL"):
        kafka(ssl_cafile=pem_files["ssl_cafile"])
    with pytest.raises(ValidationError, match="need security_protocol SSL or SASL_SSL"):
        sasl("SASL_PLAINTEXT", "PLAIN", ssl_cafile=pem_files["ssl_cafile"])


def test_security_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOPLINE_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("HOPLINE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("HOPLINE_KAFKA__SASL_USERNAME", "windower")
    monkeypatch.setenv("HOPLINE_KAFKA__SASL_PASSWORD", PASSWORD)
    assert security_config(Settings())["sasl.password"] == PASSWORD


def test_the_password_never_shows_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = sasl("SASL_PLAINTEXT", "SCRAM-SHA-512")
    shown = [repr(settings), str(settings), repr(settings.kafka), str(settings.kafka), repr(settings.model_dump())]
    shown.append(repr(broker_credentials(settings)))
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings %s / %r", settings, settings.kafka)
    shown.append(caplog.text)
    for text in shown:
        assert PASSWORD not in text
    assert "**********" in repr(settings.kafka), "masked, not dropped"


def test_child_services_get_the_real_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """``to_env`` is how the supervisor hands settings to child processes: a masked password would lock them out."""
    env = sasl("SASL_PLAINTEXT", "SCRAM-SHA-512").to_env()
    assert env["HOPLINE_KAFKA__SASL_PASSWORD"] == PASSWORD
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = Settings()
    assert child.kafka.sasl_password is not None and child.kafka.sasl_password.get_secret_value() == PASSWORD
