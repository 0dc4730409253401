"""deploy/docker-compose.yml, checked without Docker (none runs here): every file a service
mounts or builds from exists, the platform's services set only real settings, and the
broker, Grafana and InfluxDB pieces agree with each other and with the platform."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cityiot.domain.settings import MqttTarget, Settings
from cityiot.storage.broker_access import PLATFORM_USER

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text("utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
PLATFORM = ("broker-files", "ingest", "rules", "api")


def _bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((DEPLOY / source).resolve(), target))
    return mounts


def test_every_bind_mount_and_build_file_exists() -> None:
    for name, service in SERVICES.items():
        for source, _target in _bind_mounts(service):
            assert source.exists(), f"{name} mounts {source}, which is not in the repository"
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
            assert (context / "pyproject.toml").is_file(), "the build context is the repo root"


def test_the_platform_image_copies_what_exists() -> None:
    dockerfile = (DEPLOY / "platform/Dockerfile").read_text("utf-8")
    root = DEPLOY.parent
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (root / source).exists(), f"Dockerfile copies {source}, which is missing"
    ignore = (DEPLOY / "platform/Dockerfile.dockerignore").read_text("utf-8")
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert f"!{source.rstrip('/')}" in ignore.replace("/\n", "\n"), source


@pytest.mark.parametrize("name", PLATFORM)
def test_platform_services_set_only_real_settings(name: str) -> None:
    service = SERVICES[name]
    assert service["build"]["dockerfile"] == "deploy/platform/Dockerfile"
    environment = service["environment"]
    fields = Settings.model_fields
    for variable in environment:
        assert variable.startswith("CITYIOT_"), variable
        assert variable.removeprefix("CITYIOT_").lower() in fields, f"{name}: {variable}"
    # And the values are ones Settings accepts (with placeholders for the secrets).
    values = {k.removeprefix("CITYIOT_").lower(): _fill(str(v)) for k, v in environment.items()}
    settings = Settings.model_validate(values)
    assert settings.influx_db == "city"
    assert settings.database_url.startswith("postgresql+asyncpg://cityiot:")
    target = MqttTarget(settings.mqtt_url)
    assert (target.host, target.port, target.username) == ("mosquitto", 1883, PLATFORM_USER)


def _fill(value: str) -> str:
    """A compose value with ${VAR:?...} / ${VAR:-...} replaced by a stand-in secret."""
    return re.sub(r"\$\{(\w+)[^}]*\}", lambda m: f"test-{m.group(1).lower()}", value)


def test_platform_stages_run_the_documented_commands() -> None:
    assert SERVICES["ingest"]["command"] == ["cityiot", "ingest"]
    assert SERVICES["rules"]["command"] == ["cityiot", "rules"]
    assert SERVICES["api"]["command"] == ["cityiot", "api"]
    script = SERVICES["broker-files"]["command"][-1]
    assert script.startswith("/app/")
    assert (DEPLOY.parent / script.removeprefix("/app/")).is_file()


def test_broker_and_platform_agree_on_the_access_files() -> None:
    conf = dict(
        line.split(None, 1)
        for line in (DEPLOY / "mosquitto/mosquitto.conf").read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert conf["allow_anonymous"] == "false"
    mosquitto = SERVICES["mosquitto"]
    # Built on eclipse-mosquitto 2 with the client-id plugin, which the config loads.
    dockerfile = DEPLOY.parent / mosquitto["build"]["dockerfile"]
    assert "ARG MOSQUITTO_IMAGE=eclipse-mosquitto:2" in dockerfile.read_text("utf-8")
    plugin = conf["plugin"]
    assert plugin.endswith("/cityiot_clientid.so")
    assert plugin in dockerfile.read_text("utf-8")
    assert conf["plugin_opt_platform_users"] == "cityiot"
    shared = {v.split(":")[0]: v.split(":")[1] for v in mosquitto["volumes"]}
    broker_dir = shared["broker-access"]
    api = SERVICES["api"]
    api_dir = {v.split(":")[0]: v.split(":")[1] for v in api["volumes"]}["broker-access"]
    env = api["environment"]
    for key, setting in (
        ("password_file", "CITYIOT_BROKER_PASSWORD_FILE"),
        ("acl_file", "CITYIOT_BROKER_ACL_FILE"),
        ("pid_file", "CITYIOT_BROKER_PID_FILE"),
    ):
        in_broker = Path(conf[key])
        assert in_broker.parent == Path(broker_dir), key
        assert Path(env[setting]) == Path(api_dir) / in_broker.name, setting
    # SIGHUP needs the broker's pid to mean the broker: one pid namespace.
    assert api["pid"] == "service:mosquitto"
    files = SERVICES["broker-files"]["environment"]
    assert files["CITYIOT_BROKER_PASSWORD_FILE"] == env["CITYIOT_BROKER_PASSWORD_FILE"]
    assert files["CITYIOT_BROKER_ACL_FILE"] == env["CITYIOT_BROKER_ACL_FILE"]
    assert mosquitto["depends_on"]["broker-files"]["condition"] == "service_completed_successfully"


def test_influxdb_is_2x_with_bucket_city_and_a_dbrp_mapping() -> None:
    influx = SERVICES["influxdb"]
    assert influx["image"].startswith("influxdb:2")
    env = influx["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert env["DOCKER_INFLUXDB_INIT_BUCKET"] == "city"
    assert "DOCKER_INFLUXDB_INIT_ORG" in env and "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN" in env
    (init,) = [t for s, t in _bind_mounts(influx) if t.startswith("/docker-entrypoint-initdb.d")]
    script = DEPLOY / "platform/influxdb-init/dbrp.sh"
    assert os.access(script, os.X_OK), "the image runs only executable init scripts"
    text = script.read_text("utf-8")
    assert "influx v1 dbrp create" in text and "--db city" in text and "--default" in text
    assert init == "/docker-entrypoint-initdb.d:ro" or init == "/docker-entrypoint-initdb.d"


def test_grafana_gets_the_plugin_and_every_variable_its_provisioning_reads() -> None:
    grafana = SERVICES["grafana"]
    env = grafana["environment"]
    assert "yesoreyeram-infinity-datasource" in env["GF_INSTALL_PLUGINS"]
    provisioning = (DEPLOY / "grafana/provisioning/datasources/cityiot.yaml").read_text("utf-8")
    used = set(re.findall(r"\$\{(\w+)\}|\$(\w+)", provisioning))
    names = {a or b for a, b in used}
    assert names == {
        "CITYIOT_INFLUX_URL",
        "CITYIOT_INFLUX_TOKEN",
        "CITYIOT_API_URL",
        "CITYIOT_GRAFANA_API_KEY",
    }
    assert names <= set(env)
    assert (
        env["CITYIOT_API_URL"] == f"http://api:{SERVICES['api']['environment']['CITYIOT_API_PORT']}"
    )
    data = yaml.safe_load(provisioning)
    influx = next(s for s in data["datasources"] if s["type"] == "influxdb")
    assert influx["jsonData"]["dbName"] == "city"
    assert influx["jsonData"]["version"] == "InfluxQL"
    assert influx["jsonData"]["httpHeaderName1"] == "Authorization"
    assert influx["secureJsonData"]["httpHeaderValue1"] == "Token ${CITYIOT_INFLUX_TOKEN}"
    api = next(s for s in data["datasources"] if s["type"] == "yesoreyeram-infinity-datasource")
    assert api["jsonData"]["auth_method"] == "bearerToken"
    assert api["secureJsonData"]["bearerToken"] == "${CITYIOT_GRAFANA_API_KEY}"
    assert api["jsonData"]["allowedHosts"] == [api["url"]]


def test_services_wait_for_what_they_need() -> None:
    for name in ("ingest", "rules", "api"):
        needs = SERVICES[name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy", name
        assert needs["influxdb"]["condition"] == "service_healthy", name
        assert needs["broker-files"]["condition"] == "service_completed_successfully", name
    for name in ("postgres", "influxdb"):
        assert "healthcheck" in SERVICES[name]
    declared = set(COMPOSE["volumes"])
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, source
