"""The deployment files, checked without Docker: compose invariants, the image, alerts, the dashboard.

No Docker engine runs where the suite runs, so the compose file is parsed and its invariants
checked (3 brokers, replication, health-gated start-up, non-root image, declared volumes); the
Prometheus config and alert rules go through ``promtool`` (Debian package ``prometheus``,
installed by ``make setup``), and every metric the dashboard and the alerts query must be one the
services define.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = INFRA / "grafana" / "dashboards" / "hopline.json"
HOPLINE_SERVICES = ("windower", "worker", "assembler", "controller", "gateway")
GATEWAY_PORT = 8765

LoadYaml = Callable[[Path], Any]


@pytest.fixture(scope="module")
def load_yaml() -> LoadYaml:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: the compose/YAML checks need pyyaml (dev)")
    return lambda path: yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose(load_yaml: LoadYaml) -> dict[str, Any]:
    return dict(load_yaml(COMPOSE))


@pytest.fixture(scope="module")
def brokers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if str(s.get("image", "")).startswith("apache/kafka")}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian package prometheus; `make setup` installs it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, check=False)


def image_env() -> dict[str, str]:
    """``ENV`` of infra/Dockerfile (``NAME=value`` pairs)."""
    env: dict[str, str] = {}
    for line in (INFRA / "Dockerfile").read_text().splitlines():
        if line.startswith("ENV "):
            env.update(pair.partition("=")[::2] for pair in line.split()[1:])
    return env


# -- compose: the Kafka cluster --------------------------------------------------------------------------


def test_three_brokers_replicate_everything_three_times_and_need_two_in_sync(
    brokers: dict[str, dict[str, Any]],
) -> None:
    assert len(brokers) == 3
    envs = [broker["environment"] for broker in brokers.values()]
    for env in envs:
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 2
        assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in envs) == [1, 2, 3]
    assert len({env["CLUSTER_ID"] for env in envs}) == 1, "one cluster"
    cluster_id = envs[0]["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "KRaft ids are 16 bytes, base64url"
    for name, broker in brokers.items():
        env = broker["environment"]
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert sorted(v.split("@")[1].split(":")[0] for v in voters) == sorted(brokers), "every broker votes"
        assert f"{env['KAFKA_NODE_ID']}@{name}:" in env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
        assert broker["healthcheck"]["test"], f"{name} has no healthcheck"


def test_every_broker_keeps_its_data_in_its_own_named_volume(
    compose: dict[str, Any], brokers: dict[str, dict[str, Any]]
) -> None:
    used = []
    for name, broker in brokers.items():
        log_dir = broker["environment"]["KAFKA_LOG_DIRS"]
        mounts = dict(volume.split(":")[:2][::-1] for volume in broker["volumes"])
        assert log_dir in mounts, f"{name}: {log_dir} is not on a volume"
        assert mounts[log_dir] in compose["volumes"], f"{name}: {mounts[log_dir]} is not a named volume"
        used.append(mounts[log_dir])
    assert len(set(used)) == 3, "brokers must not share a data volume"


def test_every_named_volume_is_declared_and_every_bind_mount_exists(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"


def test_the_host_listener_stays_on_127_0_0_1_29092(brokers: dict[str, dict[str, Any]]) -> None:
    """``hopline --bootstrap-servers 127.0.0.1:29092 demo`` on the host: each broker reachable as advertised."""
    advertised = {}
    for name, broker in brokers.items():
        listeners = dict(item.split("://") for item in broker["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(","))
        host, port = listeners["HOST"].rsplit(":", 1)
        assert host == "127.0.0.1"
        container_port = next(
            item.split("://")[1].rsplit(":", 1)[1]
            for item in broker["environment"]["KAFKA_LISTENERS"].split(",")
            if item.startswith("HOST://")
        )
        assert f"127.0.0.1:{port}:{container_port}" in broker["ports"], f"{name} does not publish {port}"
        advertised[name] = int(port)
    assert 29092 in advertised.values()
    assert len(set(advertised.values())) == 3


# -- compose: the hopline services ------------------------------------------------------------------------


def test_every_hopline_service_is_health_checked_and_waits_for_healthy_brokers(
    compose: dict[str, Any], brokers: dict[str, dict[str, Any]]
) -> None:
    services = compose["services"]
    metrics_port = image_env()["HOPLINE_METRICS__PORT"]
    for name in HOPLINE_SERVICES:
        service = services[name]
        probe = " ".join(service["healthcheck"]["test"])
        expected = f"127.0.0.1:{GATEWAY_PORT}/healthz" if name == "gateway" else f"127.0.0.1:{metrics_port}/metrics"
        assert expected in probe, f"{name} health check: {probe}"
        depends = service["depends_on"]
        for broker in brokers:
            assert depends[broker] == {"condition": "service_healthy"}, f"{name} starts before {broker} is healthy"
        assert depends["topics"] == {"condition": "service_completed_successfully"}
        assert service["build"]["dockerfile"] == "infra/Dockerfile"
        env = service["environment"]
        assert int(env["HOPLINE_KAFKA__REPLICATION_FACTOR"]) == 3, f"{name} would create RF-1 topics (min ISR 2)"
        assert sorted(env["HOPLINE_KAFKA__BOOTSTRAP_SERVERS"].split(",")) == [f"{b}:9092" for b in sorted(brokers)]
    topics = services["topics"]
    assert topics["command"] == ["topics", "create"]
    assert all(topics["depends_on"][b] == {"condition": "service_healthy"} for b in brokers)
    assert int(topics["environment"]["HOPLINE_KAFKA__REPLICATION_FACTOR"]) == 3


def test_the_gateway_listens_on_all_interfaces_with_tokens_from_a_secret(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["command"][:1] == ["gateway"] and "0.0.0.0" in gateway["command"]
    assert f"{GATEWAY_PORT}:{GATEWAY_PORT}" in gateway["ports"]
    secret = gateway["secrets"][0]
    assert secret in compose["secrets"]
    assert gateway["environment"]["HOPLINE_GATEWAY__TOKENS_FILE"] == f"/run/secrets/{secret}"


def test_nothing_runs_as_root(compose: dict[str, Any]) -> None:
    dockerfile = (INFRA / "Dockerfile").read_text().splitlines()
    final_stage = dockerfile[max(i for i, line in enumerate(dockerfile) if line.startswith("FROM ")) :]
    users = [line.split()[1] for line in final_stage if line.startswith("USER ")]
    assert users, "the image's final stage sets no USER: it would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    for name, service in compose["services"].items():
        assert str(service.get("user", "")).split(":")[0] not in ("root", "0"), f"{name} overrides the user to root"


def test_the_image_ships_the_schemas_as_package_data() -> None:
    """The image installs a wheel; the wheel carries the schemas only if pyproject declares them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["pipeline.contracts"]
    schemas = sorted((ROOT / "pipeline" / "contracts" / "schemas").glob("*.avsc"))
    assert schemas
    shipped = {path for pattern in patterns for path in (ROOT / "pipeline" / "contracts").glob(pattern)}
    assert set(schemas) <= shipped, f"not package data: {sorted(set(schemas) - shipped)}"


# -- Prometheus -------------------------------------------------------------------------------------------


def test_prometheus_scrapes_every_service_on_its_metrics_port(load_yaml: LoadYaml, compose: dict[str, Any]) -> None:
    config = load_yaml(INFRA / "prometheus.yml")
    metrics_port = int(image_env()["HOPLINE_METRICS__PORT"])
    scraped = {}
    for job in config["scrape_configs"]:
        (sd,) = job["dns_sd_configs"]
        scraped[job["job_name"]] = (sd["names"], sd["port"])
    assert scraped == {name: ([name], GATEWAY_PORT if name == "gateway" else metrics_port) for name in HOPLINE_SERVICES}
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./infra/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    for rules in config["rule_files"]:
        assert f"./infra/{rules}:/etc/prometheus/{rules}:ro" in mounts, f"{rules} is not mounted next to the config"


def test_promtool_accepts_the_config_and_the_rules() -> None:
    checked = promtool("check", "config", str(INFRA / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout and "rule files found" in checked.stdout


def test_alerts_fire_when_they_should_and_not_otherwise() -> None:
    """``infra/alerts.test.yml``: fires / does not fire for the e2e SLA, ladder, lag, dead letters, transport."""
    tested = promtool("test", "rules", str(INFRA / "alerts.test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_required_alerts_exist(load_yaml: LoadYaml) -> None:
    rules = {r["alert"]: r for group in load_yaml(INFRA / "alerts.yml")["groups"] for r in group["rules"]}
    assert {"HoplineE2eP95OverSla", "HoplineWorkerLagGrowing", "HoplineDeadLetters"} <= set(rules)
    assert {"HoplineDegradedAboveLevel2", "HoplineTransportAlarm"} <= set(rules)
    assert "> 0.5" in rules["HoplineE2eP95OverSla"]["expr"] and rules["HoplineE2eP95OverSla"]["for"] == "2m"
    assert "> 2" in rules["HoplineDegradedAboveLevel2"]["expr"] and rules["HoplineDegradedAboveLevel2"]["for"] == "5m"


# -- metric names: dashboard and alerts against the code ---------------------------------------------------


def defined_metrics() -> set[str]:
    """Every series name the services expose, from prometheus_client's registry after importing them."""
    for package in ("pipeline", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            if "prometheus_client" in path.read_text():
                importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("hopline_")
        for suffix in suffixes.get(family.type, ("",))
    }


def referenced_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bhopline_[a-z0-9_]+", expr))


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} queries nothing"
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def test_the_metric_registry_reads_names_as_prometheus_exposes_them() -> None:
    names = defined_metrics()
    assert "hopline_hop_latency_seconds_bucket" in names and "hopline_hop_latency_seconds" not in names
    assert "hopline_worker_dead_letters_total" in names and "hopline_worker_dead_letters" not in names
    assert "hopline_controller_level" in names


def test_every_metric_the_dashboard_queries_is_defined_in_the_code() -> None:
    defined = defined_metrics()
    referenced = [(title, referenced_metrics(expr)) for title, expr in dashboard_exprs()]
    assert all(names for _title, names in referenced), "a query without a hopline metric"
    unknown = [(title, sorted(names - defined)) for title, names in referenced if names - defined]
    assert not unknown, f"queried but not defined: {unknown}"


def test_every_metric_the_alerts_query_is_defined_in_the_code(load_yaml: LoadYaml) -> None:
    defined = defined_metrics()
    for group in load_yaml(INFRA / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            unknown = referenced_metrics(rule["expr"]) - defined
            assert not unknown, f"{rule['alert']} queries undefined {sorted(unknown)}"


def test_the_dashboard_has_the_panels_operators_need() -> None:
    queried = " ".join(expr for _title, expr in dashboard_exprs())
    for metric in (
        'hopline_hop_latency_seconds_bucket{component="e2e"}',
        "histogram_quantile(0.5, sum by (le, component) (rate(hopline_hop_latency_seconds_bucket",
        "histogram_quantile(0.95, sum by (le, component) (rate(hopline_hop_latency_seconds_bucket",
        "hopline_worker_batch_size_bucket",
        "hopline_controller_level",
        "hopline_worker_consumer_lag_messages",
        "hopline_worker_dead_letters_total",
        "hopline_transport_alarm",
    ):
        assert metric in queried, f"no panel queries {metric}"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query as a recording rule (Grafana's $__rate_interval as 1m)."""
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": expr.replace("$__rate_interval", "1m")}
        for i, (_title, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.json"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(rules)} rules found" in checked.stdout


def test_grafana_provisions_the_datasource_and_dashboard_the_compose_file_mounts(
    load_yaml: LoadYaml, compose: dict[str, Any]
) -> None:
    provisioning = INFRA / "grafana" / "provisioning"
    (datasource,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {datasource["uid"]}
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    (provider,) = load_yaml(provisioning / "dashboards" / "hopline.yml")["providers"]
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./infra/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
