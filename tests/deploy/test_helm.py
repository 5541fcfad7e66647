"""The Helm chart (deploy/helm/touchstream) through the real helm: lint, render with the
default and the production values, validate every manifest against the Kubernetes
schemas (strict), decode the Prometheus Operator resources strictly, and check what
the chart promises: rules and dashboard from their one source, non-root read-only
containers, probes, workers capped at the partition count, documented values.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_support import (
    CHART,
    DASHBOARDS_DIR,
    PRODUCTION_VALUES,
    by_kind,
    container,
    documents,
    one,
    rule_groups_of_files,
    run,
    secret_data,
    template,
    tool,
)

from deploy import toolchain
from service.settings import Settings, parse_api_keys
from streams.engine.config import EngineConfig
from streams.worker.settings import WorkerSettings

# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest schemas.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
OPERATOR_API = "monitoring.coreos.com/v1"
VALUE_SETS = {"default": [], "production": [PRODUCTION_VALUES]}
KNOWN_ENV = ({f"TOUCHSTREAM_{n.upper()}" for n in Settings.model_fields}
             | {f"TOUCHSTREAM_{n.upper()}" for n in WorkerSettings.model_fields})


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, str, list[dict[str, Any]]]:
    """(name of the value set, the rendered YAML, its documents)."""
    text = template(VALUE_SETS[request.param])
    return request.param, text, documents(text)


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_helm_lint_passes_strict(values: str) -> None:
    helm = tool(toolchain.helm)
    args = [a for p in VALUE_SETS[values] for a in ("--values", str(p))]
    result = run([helm, "lint", "--strict", CHART, *args])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_manifest_validates_against_the_kubernetes_schemas(
        rendered: tuple[str, str, list[dict[str, Any]]], tmp_path: Path) -> None:
    name, _, docs = rendered
    builtin = [d for d in docs if d["apiVersion"] != OPERATOR_API]
    operator = [d for d in docs if d["apiVersion"] == OPERATOR_API]
    for version in KUBE_VERSIONS:
        for doc in builtin:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} on {version}: "
                            f"{exc.message} at {list(exc.path)}", pytrace=False)
    # kubernetes-validate has no schemas for custom resources: decode them strictly
    # into the Prometheus Operator's own types instead.
    if operator:
        path = tmp_path / "operator.yaml"
        path.write_text(yaml.safe_dump_all(operator))
        result = run([tool(toolchain.crd_check), path])
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("OK ") == len(operator)


def test_the_production_values_render_every_optional_resource(
        rendered: tuple[str, str, list[dict[str, Any]]]) -> None:
    name, _, docs = rendered
    kinds = sorted({d["kind"] for d in docs})
    always = ["Deployment", "PodDisruptionBudget", "Service", "ServiceAccount", "StatefulSet"]
    if name == "default":
        assert kinds == sorted([*always, "Secret"])
    else:  # existingSecret: the chart makes none
        assert kinds == sorted([*always, "ConfigMap", "HorizontalPodAutoscaler",
                                "NetworkPolicy", "PrometheusRule", "ServiceMonitor"])


def test_the_prometheus_rule_is_the_shipped_rule_files() -> None:
    docs = documents(template([PRODUCTION_VALUES]))
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == rule_groups_of_files()
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_the_chart_reads_rules_and_dashboards_through_links_not_copies() -> None:
    for link, target in (("rules", "prometheus/rules"), ("dashboards", "grafana/dashboards")):
        path = CHART / "files" / link
        assert path.is_symlink(), f"{path} must link to deploy/{target}"
        assert path.resolve() == (CHART.parents[1] / target).resolve()


def test_the_dashboard_config_map_carries_the_shipped_dashboard() -> None:
    docs = documents(template([PRODUCTION_VALUES]))
    dashboards = [d for d in by_kind(docs, "ConfigMap")
                  if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(dashboards) == 1
    data = dashboards[0]["data"]
    assert sorted(data) == sorted(p.name for p in DASHBOARDS_DIR.glob("*.json"))
    for file_name, text in data.items():
        assert json.loads(text) == json.loads((DASHBOARDS_DIR / file_name).read_text())
    assert dashboards[0]["metadata"]["annotations"] == {"grafana_folder": "touchstream"}


def test_the_packaged_chart_holds_the_linked_files(tmp_path: Path) -> None:
    """`helm package` follows the links: the chart installs from its archive too."""
    helm = tool(toolchain.helm)
    result = run([helm, "package", CHART, "--destination", tmp_path])
    assert result.returncode == 0, result.stderr
    archive = next(tmp_path.glob("touchstream-*.tgz"))
    listed = run(["tar", "-tzf", archive]).stdout.split()
    for path in [*(CHART / "files" / "rules").glob("*.yml"),
                 *(CHART / "files" / "dashboards").glob("*.json")]:
        assert f"touchstream/files/{path.parent.name}/{path.name}" in listed
    rendered = run([helm, "template", "t", archive, "--set", "prometheusRule.enabled=true"])
    assert rendered.returncode == 0, rendered.stderr
    assert one(documents(rendered.stdout), "PrometheusRule")["spec"]["groups"] == \
        rule_groups_of_files()


def test_every_pod_runs_non_root_on_a_read_only_root(
        rendered: tuple[str, str, list[dict[str, Any]]]) -> None:
    _, _, docs = rendered
    workloads = by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet")
    assert len(workloads) == 2
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        security = container(workload)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in container(workload)["volumeMounts"]}
        assert "/tmp" in mounts  # noqa: S108 - writable places are volumes only


def test_the_api_probes_and_the_worker_state(
        rendered: tuple[str, str, list[dict[str, Any]]]) -> None:
    name, _, docs = rendered
    api = container(one(docs, "Deployment", "-api"))
    assert api["command"] + api["args"] == ["touchstream", "api"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert api["resources"]["requests"] and api["resources"]["limits"]
    pdb = one(docs, "PodDisruptionBudget", "-api")
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "api"

    workers = one(docs, "StatefulSet", "-worker")
    worker = container(workers)
    assert worker["command"] + worker["args"] == ["touchstream", "worker"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["TOUCHSTREAM_STATE_DIR"]["value"] == "/var/lib/touchstream/state"
    assert env["TOUCHSTREAM_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.name"
    claims = workers["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["state"]
    assert {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}["state"] == \
        "/var/lib/touchstream/state"
    if name == "production":
        assert "replicas" not in workers["spec"]  # the autoscaler owns it


def test_workers_on_empty_dir_recover_from_the_changelog() -> None:
    docs = documents(template(sets={"worker.persistence.enabled": False}))
    workers = one(docs, "StatefulSet", "-worker")
    assert "volumeClaimTemplates" not in workers["spec"]
    volumes = {v["name"]: v for v in workers["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}


def test_the_autoscaler_never_exceeds_the_partitions() -> None:
    docs = documents(template([PRODUCTION_VALUES]))
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                             "name": "touchstream-worker"}
    selector = hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]
    assert selector == {"consumergroup": "touchstream", "topic": "touchpoints"}


def test_more_workers_than_partitions_is_refused() -> None:
    helm = tool(toolchain.helm)
    result = run([helm, "template", "t", CHART, "--set", "worker.replicas=7"])
    assert result.returncode != 0
    assert "worker.replicas (7) > kafka.partitions (6)" in result.stderr


def test_the_api_keys_secret_generated_or_existing() -> None:
    docs = documents(template())
    keys = secret_data(docs)["touchstream-api-keys"]["api-keys"]
    (key,) = parse_api_keys(keys)  # a generated admin key, good enough for production
    assert key.name == "admin" and key.scopes == {"read", "write", "admin"}
    Settings(environment="production", api_keys=keys)  # type: ignore[arg-type]
    given = documents(template(sets={"apiKeys.keys": "ops:read:0123456789abcdef0123"}))
    assert secret_data(given)["touchstream-api-keys"]["api-keys"] == \
        "ops:read:0123456789abcdef0123"
    existing = documents(template([PRODUCTION_VALUES]))
    assert by_kind(existing, "Secret") == []
    # The keys reach the API as a file from the Secret (re-read on change: rotation
    # without a restart), never as an environment variable.
    deployment = one(existing, "Deployment", "-api")
    api = container(deployment)
    env = {e["name"]: e for e in api["env"]}
    assert "TOUCHSTREAM_API_KEYS" not in env
    path = Path(env["TOUCHSTREAM_API_KEYS_FILE"]["value"])
    (mount,) = [m for m in api["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert mount["readOnly"] is True
    volume = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}[
        mount["name"]]
    assert volume["secret"] == {"secretName": "touchstream-api-keys",
                                "items": [{"key": "api-keys", "path": path.name}]}


def test_the_engine_config_is_one_config_map_for_api_and_workers() -> None:
    docs = documents(template([PRODUCTION_VALUES]))
    config = one(docs, "ConfigMap", "-config")
    EngineConfig.model_validate(json.loads(config["data"]["engine.json"]))
    for workload in (one(docs, "Deployment"), one(docs, "StatefulSet")):
        env = {e["name"]: e.get("value") for e in container(workload)["env"]}
        assert env["TOUCHSTREAM_ENGINE_CONFIG"] == "/etc/touchstream/engine.json"
        assert env["TOUCHSTREAM_TOPIC_PARTITIONS"] == "12"
        volumes = workload["spec"]["template"]["spec"]["volumes"]
        assert {"name": "config", "configMap": {"name": config["metadata"]["name"]}} in volumes


def test_every_environment_variable_is_a_setting(
        rendered: tuple[str, str, list[dict[str, Any]]]) -> None:
    _, _, docs = rendered
    for workload in by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet"):
        names = {e["name"] for e in container(workload)["env"]}
        assert names <= KNOWN_ENV, names - KNOWN_ENV


def test_the_service_monitor_keeps_the_job_names_the_rules_match() -> None:
    docs = documents(template([PRODUCTION_VALUES]))
    monitor = one(docs, "ServiceMonitor")
    jobs = {e["port"]: e["relabelings"][0]["replacement"] for e in monitor["spec"]["endpoints"]}
    shipped = yaml.safe_load((CHART.parents[1] / "prometheus" / "prometheus.yml").read_text())
    assert set(jobs.values()) <= {j["job_name"] for j in shipped["scrape_configs"]}
    assert jobs == {"http": "touchstream", "metrics": "touchstream-worker"}
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    ports = {p["name"] for s in services.values() for p in s["spec"]["ports"]}
    assert set(jobs) <= ports


def _leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        # Maps of free-form content (resources, selectors, ...) are documented whole.
        if isinstance(value, dict) and value and key not in ("resources", "seccompProfile",
                                                             "capabilities", "requests",
                                                             "limits"):
            keys += _leaf_keys(value, path + ".")
        else:
            keys.append(path)
    return keys


def test_every_value_is_documented_in_the_chart_readme() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    leaves = set(_leaf_keys(values))
    assert leaves - documented == set(), "undocumented values"
    assert documented - leaves == set(), "documented values that do not exist"
