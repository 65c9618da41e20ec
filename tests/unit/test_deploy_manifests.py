"""The deployment files tell the truth: every process runs, probes hit real endpoints, every
setting exists, and no secret sits in plain configuration.

The Kubernetes base is rendered with ``kubectl kustomize deploy/k8s`` (kubectl ships with
kustomize) and validated against the Kubernetes schemas (kubernetes-validate);
``docker-compose.yml`` is read as YAML.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import yaml

from tests.settings_helpers import ALL_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
LONG_RUNNING = {"serve", "relay", "consume", "compensate"}
SECRET_KEYS = {"DEPOT_DATABASE_URL", "DEPOT_JWT_SECRET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
SINGLE_ACTIVE = {("depot-upload", "relay"), ("depot-reconciler", "relay"), ("depot-reconciler", "serve")}
KUBERNETES_VERSION = "1.32.0"


def readme_processes() -> set[tuple[str, str]]:
    """The long-running processes of README's processes table, as (program, command)."""
    section = (ROOT / "README.md").read_text().split("## Processes", 1)[1].split("\n## ", 1)[0]
    found = set(re.findall(r"^\| `(depot-[a-z]+) ([a-z]+)", section, flags=re.MULTILINE))
    return {item for item in found if item[1] in LONG_RUNNING}


@cache
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed: see README 'Running in production' for how to install it"
    output = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "k8s")], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered() if doc["kind"] == kind]


def config_map() -> dict[str, str]:
    (settings,) = of_kind("ConfigMap")
    return dict(settings["data"])


def config_map_name() -> str:
    (settings,) = of_kind("ConfigMap")
    return str(settings["metadata"]["name"])


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_every_long_running_process_has_its_own_deployment() -> None:
    """Each serve/relay/consume/compensate process of README's table runs as exactly one Deployment."""
    commands = [tuple(container(d)["command"]) for d in of_kind("Deployment")]
    assert sorted(commands) == sorted(readme_processes())


def test_probes_point_at_the_port_the_process_serves_its_ops_endpoints_on() -> None:
    """Readiness is /readyz and liveness /healthz, on the HTTP port of an API or DEPOT_OPS_PORT of a worker."""
    for deployment in of_kind("Deployment"):
        spec = container(deployment)
        env = {item["name"]: item.get("value") for item in spec["env"]}
        _program, command = spec["command"]
        variable = "DEPOT_HTTP_PORT" if command == "serve" else "DEPOT_OPS_PORT"
        port = int(env[variable])
        (declared,) = spec["ports"]
        assert declared["containerPort"] == port, deployment["metadata"]["name"]
        assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": declared["name"]}
        assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": declared["name"]}
        assert config_map()["DEPOT_HTTP_HOST"] == "0.0.0.0"  # reachable from the kubelet, not loopback only


def test_every_depot_key_is_a_real_setting_and_no_secret_is_in_the_config_map() -> None:
    """A typo in a setting name fails here, and credentials come only from the Secret."""
    keys = set(config_map())
    for deployment in of_kind("Deployment"):
        keys |= {item["name"] for item in container(deployment)["env"]}
        assert {"secretRef": {"name": "depot-credentials"}} in container(deployment)["envFrom"]
    assert {key for key in keys if key.startswith("DEPOT_")} - ALL_SETTINGS == set()
    assert keys & SECRET_KEYS == set()
    for key, value in config_map().items():
        assert not re.search(r"://[^/\s]*:[^/\s]*@", value), f"{key} holds a credential"


def test_single_active_processes_explain_their_replica_count() -> None:
    """Relays and the reconciler run one active copy (an advisory lock): their Deployments say what replicas do."""
    for deployment in of_kind("Deployment"):
        program, command = container(deployment)["command"]
        note = deployment["metadata"].get("annotations", {}).get("depot.io/replicas", "")
        if (program, command) in SINGLE_ACTIVE:
            assert "advisory lock" in note, deployment["metadata"]["name"]


def test_every_pod_runs_non_root_read_only_with_resources_and_a_disruption_budget() -> None:
    """Hardened pods: non-root, read-only root filesystem, no privilege escalation, limits, and a PDB each."""
    budgets = {tuple(sorted(p["spec"]["selector"]["matchLabels"].items())) for p in of_kind("PodDisruptionBudget")}
    for deployment in of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        spec = container(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["resources"]["limits"]["memory"]
        assert spec["resources"]["requests"]["cpu"]
        assert tuple(sorted(deployment["spec"]["selector"]["matchLabels"].items())) in budgets


def test_one_ingress_routes_the_console_and_every_api_to_its_service() -> None:
    """One origin: /v1/search to the search API, /v1/reconcile to the reconciler, the rest to the upload API."""
    (ingress,) = of_kind("Ingress")
    routes = {
        path["path"]: path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert routes == {"/v1/search": "search-api", "/v1/reconcile": "reconciler", "/": "upload-api"}
    services = {service["metadata"]["name"] for service in of_kind("Service")}
    assert set(routes.values()) <= services


def test_the_upload_api_scales_on_cpu_and_the_indexer_on_its_consumer_lag() -> None:
    """HPA on the upload API; a KEDA ScaledObject on the indexer's group and topic, capped at the partitions."""
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "upload-api"
    (scaled,) = of_kind("ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "indexer"
    assert trigger["metadata"]["consumerGroup"] == config_map()["DEPOT_CONSUMER_GROUP"]
    assert trigger["metadata"]["topic"] == "depot.documents.v1"
    assert trigger["metadata"]["bootstrapServers"] == config_map()["DEPOT_KAFKA_BOOTSTRAP"]
    assert scaled["spec"]["maxReplicaCount"] <= int(config_map()["DEPOT_DOCUMENTS_PARTITIONS"])


def test_network_policies_let_each_process_reach_only_what_it_needs() -> None:
    """Default deny; egress to PostgreSQL, Kafka and S3 only for pods labelled as needing it."""
    policies = {policy["metadata"]["name"]: policy for policy in of_kind("NetworkPolicy")}
    assert policies["depot-default-deny"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    needs = {
        "depot-upload relay": {"postgres", "kafka"},
        "depot-reconciler relay": {"postgres", "kafka"},
        "depot-indexer relay": {"postgres", "kafka"},
    }
    for deployment in of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "depot"
        granted = {key.removeprefix("depot.io/egress-") for key in labels if key.startswith("depot.io/egress-")}
        expected = needs.get(" ".join(container(deployment)["command"]), {"postgres", "kafka", "s3"})
        assert granted == expected, deployment["metadata"]["name"]
        for need in granted:
            selector = policies[f"depot-egress-{need}"]["spec"]["podSelector"]["matchLabels"]
            assert labels.items() >= selector.items()


def test_every_pod_exports_traces_to_a_collector_its_network_policy_lets_it_reach() -> None:
    """The ConfigMap every Deployment loads names an OTLP/HTTP endpoint, and an egress policy selecting every
    Depot pod opens that port towards the namespace the endpoint's host is in (default deny blocks the rest)."""
    endpoint = urlsplit(config_map()["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.scheme == "http"
    assert endpoint.hostname
    assert endpoint.port
    namespace = endpoint.hostname.split(".")[1]  # <service>.<namespace>.svc
    policies = [policy["spec"] for policy in of_kind("NetworkPolicy") if "Egress" in policy["spec"]["policyTypes"]]
    for deployment in of_kind("Deployment"):
        assert {"configMapRef": {"name": config_map_name()}} in container(deployment)["envFrom"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        reachable = [
            rule
            for policy in policies
            if labels.items() >= policy["podSelector"]["matchLabels"].items()
            for rule in policy.get("egress", [])
            if {"protocol": "TCP", "port": endpoint.port} in rule.get("ports", [])
            and any(
                peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": namespace}
                for peer in rule.get("to", [])
            )
        ]
        assert reachable, f"{deployment['metadata']['name']} cannot reach {endpoint.hostname}:{endpoint.port}"


def test_every_rendered_object_is_valid_against_the_kubernetes_schemas() -> None:
    """kubernetes-validate checks each object against the published schemas (strict: unknown fields fail)."""
    objects = [doc for doc in rendered() if doc["apiVersion"] != "keda.sh/v1alpha1"]  # a CRD: no bundled schema
    assert len(objects) >= 20
    for item in objects:
        kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)


# --- docker-compose.yml -----------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_runs_every_long_running_process() -> None:
    """docker-compose.yml starts each serve/relay/consume/compensate process of README's table."""
    commands = {
        tuple(service["command"])
        for service in compose()["services"].values()
        if str(service.get("command", [""])[0]).startswith("depot-")
    }
    assert commands == readme_processes()


def test_compose_sets_only_real_settings() -> None:
    """Every DEPOT_* key docker-compose.yml sets is a field of a settings model."""
    keys: set[str] = set()
    for service in compose()["services"].values():
        keys |= set((service.get("environment") or {}).keys())
    keys |= set(compose()["x-depot"]["environment"].keys())
    assert {key for key in keys if key.startswith("DEPOT_")} - ALL_SETTINGS == set()


def test_compose_passes_the_trace_endpoint_to_every_process() -> None:
    """Each Depot process of docker-compose.yml gets OTEL_EXPORTER_OTLP_ENDPOINT from the shell (empty = off)."""
    depot = {
        name: service
        for name, service in compose()["services"].items()
        if str(service.get("command", [""])[0]).startswith("depot-")
    }
    assert depot
    missing = [name for name, service in depot.items() if "OTEL_EXPORTER_OTLP_ENDPOINT" not in service["environment"]]
    assert missing == []
