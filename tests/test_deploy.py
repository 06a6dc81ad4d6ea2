"""deploy/ checked without a container engine: the Compose file, the Dockerfile and the
Kubernetes manifests parse, carry the required keys, and agree with the code — commands are
real `ticketline` subcommands, every environment variable is a setting, ports and probes
line up, topics are the platform's event topics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from shared.app.cli import build_parser
from shared.app.config import Settings
from shared.app.registry import SERVERS
from shared.eventstore.kafka import event_topics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
IMAGE = "ticketline:0.1.0"
WORKERS = ("relay", "projector", "jobs")


def env_names(model: type[BaseSettings]) -> set[str]:
    """Every environment variable the settings read (nested sections use their prefix)."""
    prefix = str(model.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        annotation = info.annotation
        if isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            names |= env_names(annotation)
        else:
            names.add(f"{prefix}{name}".upper())
    return names


SETTINGS_ENV = env_names(Settings)


def test_env_names_cover_aliases_and_nested_sections() -> None:
    assert {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "TICKETLINE_INTAKE_PORT"} <= SETTINGS_ENV
    assert "TICKETLINE_SLA_RESPONSE_HOURS_URGENT" in SETTINGS_ENV
    assert "TICKETLINE_SLA" not in SETTINGS_ENV


def parse_command(command: list[str]) -> Any:
    assert command[0] == "ticketline", command
    try:
        return build_parser().parse_args(command[1:])
    except SystemExit as exc:  # argparse's way of saying "not a valid command"
        raise AssertionError(f"not a valid ticketline command: {command}") from exc


def port_of(args: Any) -> int:
    assert args.command == "serve" and args.port is not None
    return int(args.port)


def topic_script_checks(script: str, partitions: int | None = None) -> None:
    for topic in event_topics("ticketline"):
        assert topic in script
    assert "kafka-topics.sh" in script and "--if-not-exists" in script
    assert "retention.ms=-1" in script and "cleanup.policy=delete" in script
    found = re.search(r"--partitions (\d+)", script)
    assert found, "partitions must be explicit"
    if partitions is not None:
        assert int(found.group(1)) == partitions


# --- Compose ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # type: ignore[no-any-return]


def ticketline_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == IMAGE}


def test_compose_has_every_part(compose: dict[str, Any]) -> None:
    services = compose["services"]
    required = {"postgres", "kafka", "kafka-topics", "migrate", *SERVERS, *WORKERS}
    assert required <= set(services)
    assert set(ticketline_services(compose)) == {"migrate", *SERVERS, *WORKERS}
    assert services["postgres"]["image"].startswith("postgres:")
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")  # the official image
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert not any("ZOOKEEPER" in k for k in kafka["environment"])
    for name in ("postgres", "kafka", *SERVERS):
        assert "healthcheck" in services[name], name


def test_compose_topics_one_shot(compose: dict[str, Any]) -> None:
    topics = compose["services"]["kafka-topics"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    env = compose["services"]["relay"]["environment"]
    topic_script_checks("\n".join(topics["command"]), int(env["TICKETLINE_KAFKA_TOPIC_PARTITIONS"]))


def test_compose_ticketline_containers_agree_with_the_code(compose: dict[str, Any]) -> None:
    for name, service in ticketline_services(compose).items():
        args = parse_command(service["command"])
        unknown = set(service["environment"]) - SETTINGS_ENV
        assert not unknown, f"{name}: not settings: {unknown}"
        assert service["environment"]["TICKETLINE_HOST"] == "0.0.0.0", name
        if name == "migrate":
            assert args.command == "migrate"
            assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
            continue
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["kafka-topics"]["condition"] == (
            "service_completed_successfully"
        )
        # Every jobs process signs checkpoints with one key (docs/checkpoints.md).
        assert "TICKETLINE_CHECKPOINT_SIGNING_KEY" in service["environment"], name
        if name in SERVERS:
            assert args.command == "serve" and args.service == name
            # Replicas must share a token key, or `serve` refuses to start.
            assert "TICKETLINE_AUTH_JWT_SECRET" in service["environment"], name
            port = port_of(args)
            assert service["ports"] == [f"{port}:{port}"]
            probe = " ".join(service["healthcheck"]["test"])
            assert f"http://127.0.0.1:{port}/health/ready" in probe
    assert parse_command(compose["services"]["relay"]["command"]).command == "relay"
    projector = parse_command(compose["services"]["projector"]["command"])
    assert projector.command == "project" and projector.source == "kafka"
    assert parse_command(compose["services"]["jobs"]["command"]).command == "jobs"
    for worker in ("relay", "projector"):
        assert compose["services"][worker]["deploy"]["replicas"] >= 2
        assert compose["services"][worker]["environment"]["TICKETLINE_METRICS_PORT"]


# --- Dockerfile -------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_platform_image() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert lines[[line.startswith("#") for line in lines].index(False)] == ("FROM python:3.11-slim")
    assert "pip install ." in text
    user = next(line.split()[1] for line in lines if line.startswith("USER "))
    assert user not in ("root", "0")
    cmd = next(line for line in lines if line.startswith("CMD "))
    parse_command(yaml.safe_load(cmd.removeprefix("CMD ")))
    for name in re.findall(r"\b(TICKETLINE_[A-Z0-9_]+)=", text):
        assert name in SETTINGS_ENV, name


# --- Kubernetes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["_file"] = path.name
                docs.append(doc)
    return docs


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests if d["kind"] == kind}


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]


def test_kustomization_lists_every_manifest(manifests: list[dict[str, Any]]) -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {d["_file"] for d in manifests}


def test_k8s_settings_are_settings(manifests: list[dict[str, Any]]) -> None:
    config = by_kind(manifests, "ConfigMap")["ticketline-config"]
    secret = by_kind(manifests, "Secret")["ticketline-secrets"]
    for keys in (config["data"], secret["stringData"]):
        assert not set(keys) - SETTINGS_ENV, set(keys) - SETTINGS_ENV
    assert "DATABASE_URL" in secret["stringData"]  # credentials stay in the Secret
    assert "TICKETLINE_AUTH_JWT_SECRET" in secret["stringData"]  # `serve` needs a shared key
    assert "TICKETLINE_CHECKPOINT_SIGNING_KEY" in secret["stringData"]  # one for every jobs
    assert "KAFKA_BOOTSTRAP_SERVERS" in config["data"]
    for doc in manifests:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        for container in containers(doc):
            if container["image"] != IMAGE:
                continue
            refs = {kind: ref[kind]["name"] for ref in container["envFrom"] for kind in ref}
            assert refs == {"configMapRef": "ticketline-config", "secretRef": "ticketline-secrets"}
            for env in container.get("env", []):
                assert env["name"] in SETTINGS_ENV, env["name"]


def test_k8s_service_deployments_probe_health(manifests: list[dict[str, Any]]) -> None:
    deployments = by_kind(manifests, "Deployment")
    services = by_kind(manifests, "Service")
    for name in SERVERS:
        deployment = deployments[f"ticketline-{name}"]
        (container,) = containers(deployment)
        assert container["image"] == IMAGE
        args = parse_command(container["command"])
        assert args.command == "serve" and args.service == name
        port = port_of(args)
        (declared,) = container["ports"]
        assert declared["containerPort"] == port
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in (port, declared["name"])
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        service = services[f"ticketline-{name}"]
        assert service["spec"]["selector"].items() <= labels.items()
        (service_port,) = service["spec"]["ports"]
        assert service_port["port"] == port
        assert service_port["targetPort"] in (port, declared["name"])


def test_k8s_workers_and_jobs(manifests: list[dict[str, Any]]) -> None:
    deployments = by_kind(manifests, "Deployment")
    relay = deployments["ticketline-relay"]
    projector = deployments["ticketline-projector"]
    assert parse_command(containers(relay)[0]["command"]).command == "relay"
    args = parse_command(containers(projector)[0]["command"])
    assert args.command == "project" and args.source == "kafka"
    assert relay["spec"]["replicas"] >= 2 and projector["spec"]["replicas"] >= 2
    assert parse_command(containers(deployments["ticketline-jobs"])[0]["command"]).command == (
        "jobs"
    )
    jobs = by_kind(manifests, "Job")
    migrate = next(j for n, j in jobs.items() if n.startswith("ticketline-migrate"))
    assert parse_command(containers(migrate)[0]["command"]).command == "migrate"
    topics = jobs["ticketline-kafka-topics"]
    (container,) = containers(topics)
    assert container["image"].startswith("apache/kafka:")
    config = by_kind(manifests, "ConfigMap")["ticketline-config"]["data"]
    script = "\n".join(container["args"])
    topic_script_checks(script, int(config["TICKETLINE_KAFKA_TOPIC_PARTITIONS"]))
    replication = re.search(r"--replication-factor (\d+)", script)
    assert replication and int(replication.group(1)) == int(
        config["TICKETLINE_KAFKA_TOPIC_REPLICATION"]
    )
    # Projector instances beyond the partitions would idle.
    assert projector["spec"]["replicas"] <= int(config["TICKETLINE_KAFKA_TOPIC_PARTITIONS"])


def test_readme_documents_sizing() -> None:
    text = (DEPLOY / "README.md").read_text()
    for topic in event_topics("ticketline"):
        assert topic in text
    for word in ("partitions", "horizontally", "single", "retention.ms=-1", "/metrics"):
        assert word in text, word
    assert "ticketline migrate" in text
