"""The files in deploy/ parse, and agree with each other and with what the code reads."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from pydantic import AliasChoices
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

import gateway.telemetry.setup
from gateway.app import create_app
from gateway.cli import build_parser
from gateway.envoy.serve import STOP_GRACE_S
from gateway.envoy.shipper_setup import position_path
from gateway.runtime import GatewayRuntime
from gateway.server import UVICORN_OPTIONS
from gateway.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
COLLECTOR_CONFIG = DEPLOY / "otel-collector" / "config.yaml"
TERRAFORM = DEPLOY / "terraform"
DECISION_LUA = ROOT / "gateway" / "envoy" / "decision.lua"
DATA_PLANES: tuple[str, ...] = get_args(Settings.model_fields["data_plane"].annotation)
NAMESPACE = "residency-gateway"
_ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


# -- loading ------------------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text("utf-8")) if d is not None)
    return docs


MANIFESTS = _manifests()


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in MANIFESTS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in {KUBERNETES}, found {len(found)}"
    return found[0]


def _container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def _secret_data(name: str) -> dict[str, str]:
    secret = _one("Secret", name)
    return {**secret.get("stringData", {}), **secret.get("data", {})}


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment a container sees, with secret/configmap refs and $(VAR) resolved."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_one("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(_secret_data(source["secretRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _ENV_REF.sub(lambda m: env[m.group(1)], item["value"])
        elif ref := item["valueFrom"].get("secretKeyRef"):
            env[item["name"]] = _secret_data(ref["name"])[ref["key"]]
        elif ref := item["valueFrom"].get("configMapKeyRef"):
            env[item["name"]] = _one("ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            env[item["name"]] = "pod-field"  # downward API: known only in the cluster
    return env


def _containerfile_env() -> dict[str, str]:
    text = CONTAINERFILE.read_text("utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                name, value = pair.split("=", 1)
                env[name] = value
    return env


def _setting_env_names() -> set[str]:
    names: set[str] = set()
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{ENV_PREFIX}{field}".upper())
    return names


def _otel_sdk_env_names() -> set[str]:
    import opentelemetry.sdk.environment_variables as sdk_env

    return {name for name in dir(sdk_env) if name.startswith("OTEL_")}


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No GATEWAY_*/OTEL_* from the test runner's environment leaks into Settings()."""
    for name in list(os.environ):
        if name.startswith((ENV_PREFIX, "OTEL_")):
            monkeypatch.delenv(name)
    yield monkeypatch


# -- parsing ------------------------------------------------------------------------------


def test_every_yaml_file_parses_and_manifests_are_well_formed() -> None:
    for path in DEPLOY.rglob("*.yaml"):
        assert list(yaml.safe_load_all(path.read_text("utf-8"))), f"{path} is empty"
    kinds = {d["kind"] for d in MANIFESTS}
    assert {"Namespace", "Deployment", "Service", "ConfigMap", "Secret", "StatefulSet"} <= kinds
    for doc in MANIFESTS:
        assert doc.get("apiVersion") and doc["metadata"].get("name"), doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]
    assert _one("Namespace", NAMESPACE)


def test_services_select_the_pods_they_name_and_their_ports() -> None:
    workloads = [d for d in MANIFESTS if d["kind"] in {"Deployment", "StatefulSet"}]
    for service in (d for d in MANIFESTS if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        targets = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert targets, f"Service {service['metadata']['name']} selects no pods"
        for workload in targets:
            template = workload["spec"]["template"]
            assert workload["spec"]["selector"]["matchLabels"].items() <= (
                template["metadata"]["labels"].items()
            )
            ports = {
                p.get("name"): p["containerPort"]
                for c in template["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for port in service["spec"]["ports"]:
                target = port["targetPort"]
                assert target in ports or target in ports.values(), (service, target)


def test_gateway_runs_several_replicas_on_postgres_with_one_hmac_key() -> None:
    deployment = _one("Deployment", "gateway")
    assert deployment["spec"]["replicas"] >= 2
    env = _container_env(_container(deployment, "gateway"))
    url = make_url(env["GATEWAY_DATABASE_URL"])
    assert url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg"
    postgres = _secret_data("postgres-credentials")
    assert (url.username, url.password, url.database) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    service = _one("Service", "postgres")
    assert url.host == service["metadata"]["name"]
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    statefulset = _one("StatefulSet", "postgres")
    assert statefulset["spec"]["serviceName"] == "postgres"
    assert service["spec"].get("clusterIP") == "None", "a StatefulSet needs a headless Service"
    assert env["GATEWAY_AUDIT_HMAC_KEY"], "replicas must share one client-IP HMAC key"
    migrate = _container_env(_container(_one("Job", "gateway-db-upgrade"), "db-upgrade"))
    assert migrate["GATEWAY_DATABASE_URL"] == env["GATEWAY_DATABASE_URL"]


# -- settings -----------------------------------------------------------------------------


def _deploy_environments() -> dict[str, dict[str, str]]:
    environments = {"Containerfile": _containerfile_env()}
    for doc in MANIFESTS:
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                label = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
                environments[label] = _container_env(container)
    return environments


def test_every_gateway_variable_is_a_setting_and_every_otel_variable_is_read() -> None:
    settings_names = _setting_env_names()
    otel_names = _otel_sdk_env_names() | {n for n in settings_names if n.startswith("OTEL_")}
    seen = 0
    for where, env in _deploy_environments().items():
        for name in env:
            if name.startswith(ENV_PREFIX):
                seen += 1
                assert name in settings_names, f"{where}: {name} is not a field of Settings"
            elif name.startswith("OTEL_"):
                assert name in otel_names, f"{where}: nothing reads {name}"
    assert seen >= 5


def test_gateway_environment_is_valid_settings(clean_environment: pytest.MonkeyPatch) -> None:
    deployment = _one("Deployment", "gateway")
    container = _container(deployment, "gateway")
    for name, value in _container_env(container).items():
        clean_environment.setenv(name, value)
    settings = Settings()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.host == "0.0.0.0"
    assert settings.port == ports["http"]
    assert settings.trusted_proxies, "behind a load balancer X-Forwarded-For must be trusted"
    assert not settings.seed_demo_catalog
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == settings.port
    for volume in container["volumeMounts"]:
        if volume["name"] == "data":
            assert Path(volume["mountPath"]) == settings.data_dir


def test_containerfile_serves_on_its_exposed_port_as_non_root() -> None:
    text = CONTAINERFILE.read_text("utf-8")
    env = _containerfile_env()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages and all(s.startswith("python:3.11-slim") for s in stages)
    assert re.search(rf"^EXPOSE {env['GATEWAY_PORT']}$", text, re.MULTILINE)
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0")), "the image must not run as root"
    assert re.search(r'^ENTRYPOINT \["gateway"\]$', text, re.MULTILINE)
    assert re.search(r'^CMD \["serve"\]$', text, re.MULTILINE)
    healthcheck = text[text.index("HEALTHCHECK") :]
    assert "/healthz" in healthcheck.split("\n\n")[0]
    copied = {c.split()[0] for c in re.findall(r"^COPY ([^\n]+)", text, re.MULTILINE)}
    for package in ("gateway", "regions", "compliance"):
        assert (ROOT / package).is_dir() and package in copied


# -- data planes --------------------------------------------------------------------------


def test_the_config_and_the_image_name_a_data_plane() -> None:
    assert set(DATA_PLANES) == {"python", "envoy"}
    config = _one("ConfigMap", "gateway-config")["data"]
    assert config["GATEWAY_DATA_PLANE"] in DATA_PLANES
    assert _containerfile_env()["GATEWAY_DATA_PLANE"] in DATA_PLANES


def _mount_of(
    container: dict[str, Any], volumes: list[dict[str, Any]], path: Path
) -> dict[str, Any]:
    """The volume `path` lives on (the deepest mount above it); fails on the root filesystem."""
    mounts = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert mounts, f"{path} is on the container's (read-only) root filesystem"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    assert not mount.get("readOnly"), f"{path} is on a read-only mount"
    return next(v for v in volumes if v["name"] == mount["name"])


@pytest.mark.parametrize("data_plane", DATA_PLANES)
def test_one_gateway_pod_serves_either_data_plane(
    clean_environment: pytest.MonkeyPatch, data_plane: str
) -> None:
    """Switching GATEWAY_DATA_PLANE is all it takes: the same port, probes and volumes fit."""
    deployment = _one("Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment, "gateway")
    env = _container_env(container)
    for name, value in {**env, "GATEWAY_DATA_PLANE": data_plane}.items():
        clean_environment.setenv(name, value)
    settings = Settings()
    assert settings.data_plane == data_plane
    ipaddress.ip_address(settings.host)  # Envoy's listener takes no host name
    # Only the public port is declared; xDS, Envoy's admin and the control app stay on loopback.
    assert [p["containerPort"] for p in container["ports"]] == [settings.port]
    assert settings.control_port != settings.port
    # Envoy's access log and its shipping position survive a container restart: not on the
    # root filesystem, on a writable pod volume (emptyDir: lost with the pod, said in README).
    assert "GATEWAY_ENVOY_ACCESS_LOG_FLUSH_MS" in env, "state the access log's crash window"
    log = settings.resolved_envoy_access_log
    for path in (log, position_path(log), settings.data_dir / "envoy"):
        volume = _mount_of(container, pod["volumes"], path)
        assert "emptyDir" in volume or "persistentVolumeClaim" in volume, volume
    # The stop: preStop, then Envoy's drain (envoy) and uvicorn's graceful shutdown.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    stop = pre_stop + UVICORN_OPTIONS["timeout_graceful_shutdown"]
    if data_plane == "envoy":
        stop += STOP_GRACE_S
    assert pod["terminationGracePeriodSeconds"] > stop


def _build_check() -> str:
    """The Containerfile's RUN that checks libcrypto and the Envoy binary, as one sh line."""
    text = CONTAINERFILE.read_text("utf-8").replace("\\\n", " ")
    runs = [
        line[4:] for line in text.splitlines() if line.startswith("RUN ") and "--version" in line
    ]
    assert len(runs) == 1, "the image must run Envoy's --version at build time"
    return runs[0]


def test_the_image_build_checks_what_envoys_decision_loads(tmp_path: Path) -> None:
    """The build fails without the libcrypto decision.lua loads or a runnable Envoy; the same
    check passes here, with this environment's wheel and libcrypto."""
    check = _build_check()
    wanted = re.search(r"for _, name in ipairs\(\{([^}]*)\}\)", DECISION_LUA.read_text("utf-8"))
    assert wanted, "decision.lua no longer lists the libcrypto names it loads"
    names = re.findall(r'"([^"]+)"', wanted.group(1))
    assert any(f"CDLL('{name}').SHA256" in check for name in names), (names, check)
    assert "envoy_binary()" in check
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        ["sh", "-c", check],
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "version:" in done.stdout


# -- proxy trust --------------------------------------------------------------------------


def test_only_the_ingress_is_trusted_as_a_proxy(clean_environment: pytest.MonkeyPatch) -> None:
    """Whoever is trusted sets the client country: never a whole private range (in many
    clusters 10.0.0.0/8 is every pod), only a narrow network for the ingress itself."""
    seen = 0
    for where, env in _deploy_environments().items():
        if "GATEWAY_TRUSTED_PROXIES" not in env:
            continue
        clean_environment.setenv("GATEWAY_TRUSTED_PROXIES", env["GATEWAY_TRUSTED_PROXIES"])
        for entry in Settings().trusted_proxies:
            seen += 1
            network = ipaddress.ip_network(entry, strict=False)
            narrowest_broad = 24 if network.version == 4 else 64
            assert network.prefixlen >= narrowest_broad, f"{where}: {network} is too broad"
    assert seen, "the gateway Deployment must name its proxies"


def test_network_policy_admits_only_named_namespaces_to_the_gateway() -> None:
    policies = [d for d in MANIFESTS if d["kind"] == "NetworkPolicy"]
    labels = _one("Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    guarding = [
        p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(guarding) == 1, "one NetworkPolicy must select the gateway pods"
    spec = guarding[0]["spec"]
    assert "Ingress" in spec["policyTypes"]
    for rule in spec["ingress"]:
        assert rule.get("from"), "a rule without `from` admits every pod"
        for peer in rule["from"]:
            assert "ipBlock" not in peer or (
                ipaddress.ip_network(peer["ipBlock"]["cidr"]).prefixlen >= 24
            ), peer
            assert peer.get("namespaceSelector", {}).get("matchLabels"), peer
        assert [p["port"] for p in rule["ports"]] == ["http"]


# -- probes -------------------------------------------------------------------------------


def _probe_paths() -> set[str]:
    paths = {"/healthz"}  # the Containerfile HEALTHCHECK (checked above)
    for doc in MANIFESTS:
        if doc["kind"] != "Deployment" or doc["metadata"]["name"] != "gateway":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in container:
                    paths.add(container[probe]["httpGet"]["path"])
        paths.add(doc["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
    return paths


def test_probe_paths_are_served_by_the_app(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    container = _container(_one("Deployment", "gateway"), "gateway")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    runtime = GatewayRuntime(Settings(data_dir=tmp_path))
    try:
        client = TestClient(create_app(runtime))  # no lifespan: nothing is started
        assert client.get("/surely-not-a-route").status_code == 404
        for path in _probe_paths():
            assert client.get(path).status_code != 404, f"{path} is not a route of the app"
    finally:
        runtime.store.close()


# -- OpenTelemetry ------------------------------------------------------------------------


def test_collector_config_is_complete_and_mounted_unchanged() -> None:
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text("utf-8"))
    mounted = yaml.safe_load(_one("ConfigMap", "otel-collector-config")["data"]["config.yaml"])
    assert mounted == config, "the ConfigMap must carry deploy/otel-collector/config.yaml"
    assert "otlp" in config["receivers"] and "batch" in config["processors"]
    pipelines = config["service"]["pipelines"]
    traces = pipelines["traces"]
    assert "otlp" in traces["receivers"] and "batch" in traces["processors"]
    for pipeline in pipelines.values():
        for part in ("receivers", "processors", "exporters"):
            for name in pipeline.get(part, []):
                assert name in config[part], f"pipeline uses undefined {part[:-1]} {name}"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]


def _port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_gateway_sends_traces_to_the_collectors_otlp_http_receiver() -> None:
    env = _container_env(_container(_one("Deployment", "gateway"), "gateway"))
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    # The gateway builds the OTLP/HTTP exporter, so the endpoint must be the HTTP receiver.
    exporter = gateway.telemetry.setup._exporter("otlp")
    assert isinstance(exporter, OTLPSpanExporter)
    exporter.shutdown()
    assert env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "http/protobuf"
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    service = _one("Service", endpoint.hostname or "")
    port = next(p for p in service["spec"]["ports"] if p["port"] == endpoint.port)
    collector = _one("Deployment", "otel-collector")
    container_ports = {
        p["name"]: p["containerPort"] for p in _container(collector, "otel-collector")["ports"]
    }
    target = port["targetPort"]
    container_port = container_ports[target] if isinstance(target, str) else target
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text("utf-8"))
    http = config["receivers"]["otlp"]["protocols"]["http"]
    assert _port_of(http["endpoint"]) == container_port
    health = config["extensions"]["health_check"]["endpoint"]
    assert container_ports["health"] == _port_of(health)


# -- Terraform ----------------------------------------------------------------------------


def _terraform() -> str:
    found = shutil.which("terraform") or "/usr/local/bin/terraform"
    if not Path(found).exists():
        pytest.skip("terraform is not installed")
    return found


def _run_terraform(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    env.pop("TF_CLI_CONFIG_FILE", None)
    done = subprocess.run(
        [_terraform(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"terraform {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_terraform_is_formatted_and_valid(tmp_path: Path) -> None:
    _run_terraform(["fmt", "-check", "-recursive", "-diff", str(TERRAFORM)], cwd=tmp_path)
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    for directory in (copy / "modules" / "gateway-region", copy / "examples" / "multi-region"):
        _run_terraform(["init", "-input=false", "-backend=false"], cwd=directory)
        _run_terraform(["validate", "-no-color"], cwd=directory)


def test_terraform_calls_only_cli_flags_that_exist() -> None:
    source = (TERRAFORM / "modules" / "gateway-region" / "main.tf").read_text("utf-8")
    regions = _subparser(build_parser(), "regions")
    # Each `"regions", "<command>"` owns the flags up to the next one.
    chunks = source.split('"regions", "')[1:]
    calls = [(chunk.split('"', 1)[0], chunk) for chunk in chunks]
    assert {command for command, _ in calls} >= {"put", "drain", "delete"}
    for command, arguments in calls:
        accepted = {o for a in _subparser(regions, command)._actions for o in a.option_strings}
        for flag in re.findall(r'"(--[a-z-]+)"', arguments):
            assert flag in accepted, f"`gateway regions {command}` has no option {flag}"


def _subparser(parser: Any, name: str) -> Any:
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and name in choices:
            return choices[name]
    raise AssertionError(f"no subcommand {name!r}")
