"""Kubernetes manifests (kustomize): strict schema validation, resources, probes, GPU pod template, network policies, secrets by reference. Static: no engine, cluster or Docker here."""

from __future__ import annotations

import re
import typing
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from garmentseg.config import AirflowConfig, Config, load_config
from tests.infra.infra_files import (
    MANIFESTS,
    RESOURCE_KINDS,
    ROOT,
    SECRET_KEY,
    created_in_readme,
    env_entries,
    helm_values,
    kustomization,
    labels_match,
    objects,
    pod_specs,
    pod_template,
    references,
    rendered,
    validate,
)


def test_kustomization_lists_existing_files_in_the_params_namespace(cfg: Config) -> None:
    kust = kustomization()
    assert kust["namespace"] == cfg.airflow.kubernetes.namespace
    listed = [*kust["resources"], *(f for g in kust.get("configMapGenerator", []) for f in g["files"])]
    missing = [f for f in listed if not (MANIFESTS / f).is_file()]
    assert not missing, f"kustomization.yaml lists files that do not exist: {missing}"
    unlisted = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", *kust["resources"]}
    assert not unlisted, f"manifests not in kustomization.yaml resources (never applied): {unlisted}"
    assert objects("Namespace") == {} or set(objects("Namespace")) == {kust["namespace"]}


@pytest.mark.parametrize(
    ("source", "doc"),
    [*rendered(), ("gpu-pod-template.yaml (embedded Pod)", pod_template())],
    ids=lambda v: v if isinstance(v, str) else f"{v['kind']}/{v['metadata']['name']}",
)
def test_manifest_validates_against_the_kubernetes_schema(source: str, doc: dict[str, Any]) -> None:
    try:
        validate(doc)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(
            f"{source}: {doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc}"
        )


def test_the_schema_check_rejects_a_broken_manifest() -> None:
    """The validator is strict: an unknown field and a malformed quantity both fail."""
    deployment = objects("Deployment")["garmentseg-bento"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    pod = pod_template()
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)


@pytest.mark.parametrize(
    ("where", "template"), list(pod_specs()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_container_has_requests_and_limits(where: str, template: dict[str, Any]) -> None:
    for container in template["spec"]["containers"]:
        resources = container.get("resources", {})
        for side in ("requests", "limits"):
            missing = [k for k in RESOURCE_KINDS if k not in resources.get(side, {})]
            assert not missing, f"{where}: container {container['name']} has no {side} for {missing}"


def test_bento_deployment_probes_and_autoscaler() -> None:
    deployment = objects("Deployment")["garmentseg-bento"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert "command" not in container and "args" not in container, (
        "the image's default command serves the Bento"
    )
    hpa = objects("HorizontalPodAutoscaler")["garmentseg-bento"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "garmentseg-bento")
    assert hpa["spec"]["minReplicas"] >= 2 <= hpa["spec"]["maxReplicas"]


def test_gpu_pod_template_matches_params(cfg: Config) -> None:
    k8s = cfg.airflow.kubernetes
    spec = pod_template()["spec"]
    (base,) = spec["containers"]
    assert base["name"] == "base", "the pod operator and the executor look for the container named base"
    assert base["image"] == k8s.image
    assert spec["nodeSelector"] == k8s.node_selector
    assert spec["tolerations"] == [dict(t) for t in k8s.tolerations]
    for side in ("requests", "limits"):
        assert int(base["resources"][side]["nvidia.com/gpu"]) == k8s.gpu_limit
    assert spec["serviceAccountName"] in objects("ServiceAccount")
    assert {"configMapRef": {"name": "garmentseg-env"}} in base["envFrom"]


def test_network_policies_admit_only_the_right_clients_to_registry_and_db() -> None:
    policies = objects("NetworkPolicy")
    postgres = objects("StatefulSet")["postgres"]["spec"]["template"]["metadata"]["labels"]
    mlflow = objects("Deployment")["mlflow"]["spec"]["template"]["metadata"]["labels"]
    bento = objects("Deployment")["garmentseg-bento"]["spec"]["template"]["metadata"]["labels"]
    training = pod_template()["metadata"]["labels"]

    def admitted(target: dict[str, str], port: int) -> list[dict[str, str]]:
        peers = []
        selecting = [
            p for p in policies.values() if labels_match(p["spec"]["podSelector"]["matchLabels"], target)
        ]
        assert selecting, f"no NetworkPolicy selects pods labelled {target}"
        for policy in selecting:
            for rule in policy["spec"]["ingress"]:
                assert [p["port"] for p in rule["ports"]] == [port]
                peers += [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
        return peers

    def reaches(peers: list[dict[str, str]], labels: dict[str, str]) -> bool:
        return any(labels_match(peer, labels) for peer in peers)

    db_clients = admitted(postgres, 5432)
    assert reaches(db_clients, mlflow)
    assert reaches(db_clients, {"tier": "airflow", "release": "airflow", "component": "scheduler"})
    assert not reaches(db_clients, bento) and not reaches(db_clients, training)
    registry_clients = admitted(mlflow, 5000)
    assert reaches(registry_clients, bento) and reaches(registry_clients, training)
    assert reaches(registry_clients, {"tier": "airflow", "release": "airflow", "component": "worker"})
    assert not reaches(registry_clients, postgres)


def test_secrets_are_referenced_never_inlined_and_each_is_documented() -> None:
    docs = [doc for _, doc in rendered()] + [pod_template()]
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created with kubectl, never committed"
    values = helm_values()
    secrets = {
        *(n for key in ("secretKeyRef", "secretRef") for n in references(docs, key)),
        *(v["secret"]["secretName"] for v in values["volumes"] if "secret" in v),
        values["data"]["metadataSecretName"],
        values["data"]["brokerUrlSecretName"],
        values["fernetKeySecretName"],
        values["apiSecretKeySecretName"],
        values["jwtSecretName"],
        values["redis"]["passwordSecretName"],
        *re.findall(r"name: ([a-z0-9-]+)", values["extraEnvFrom"]),
    } - set(objects("ConfigMap"))
    undocumented = secrets - created_in_readme("secret")
    assert not undocumented, f"Secrets referenced but not created in infra/README.md: {sorted(undocumented)}"
    config_maps = {
        *(n for key in ("configMapKeyRef", "configMapRef", "configMap") for n in references(docs, key)),
        *(v["configMap"]["name"] for v in values["volumes"] if "configMap" in v),
    }
    unknown = config_maps - set(objects("ConfigMap")) - created_in_readme("configmap")
    assert not unknown, (
        f"ConfigMaps referenced but neither in the manifests nor in infra/README.md: {unknown}"
    )
    for doc in docs:
        for env in env_entries(doc):
            if SECRET_KEY.search(env["name"]):
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{env['name']} must come from a Secret"


def test_cluster_mode_switches_are_valid_and_point_at_real_services() -> None:
    env = objects("ConfigMap")["garmentseg-env"]["data"]
    load_config(env["GARMENTSEG_PROFILE"], ROOT / "params.yaml")
    placements = typing.get_args(AirflowConfig.model_fields["placement"].annotation)
    assert env["GARMENTSEG__AIRFLOW__PLACEMENT"] in placements
    tracking = urlsplit(env["MLFLOW_TRACKING_URI"])
    service = objects("Service")[tracking.hostname]
    assert tracking.port in [p["port"] for p in service["spec"]["ports"]]
    assert urlsplit(env["GARMENTSEG__PATHS__DVC_REMOTE"]).scheme == "s3", "the workers' shared data remote"


def test_mlflow_runs_basic_auth_and_each_client_has_its_own_account() -> None:
    """Who may move `champion`: people and the Bento read, the pipeline manages, the admin only bootstraps."""
    (mlflow,) = objects("Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"]
    script = " ".join(mlflow["args"])
    assert "mlflow server --app-name basic-auth" in script and "default_permission = READ" in script
    secret_of = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in mlflow["env"] if "valueFrom" in e}
    # the values compared below are Secrets' names, not secrets
    assert secret_of["MLFLOW_AUTH_ADMIN_PASSWORD"] == "garmentseg-mlflow-admin"  # pragma: allowlist secret
    assert (
        secret_of["MLFLOW_AUTH_DATABASE_URI"]
        == secret_of["MLFLOW_FLASK_SERVER_SECRET_KEY"]
        == "garmentseg-mlflow"
    )

    (job,) = objects("Job").values()
    (bootstrap,) = job["spec"]["template"]["spec"]["containers"]
    assert bootstrap["args"] == ["garmentseg", "registry", "bootstrap-auth"]
    job_secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in bootstrap["env"]}
    assert job_secrets["MLFLOW_TRACKING_PASSWORD"] == "garmentseg-mlflow-admin"  # pragma: allowlist secret
    assert job_secrets["MLFLOW_PIPELINE_PASSWORD"] == "garmentseg-mlflow-pipeline"  # pragma: allowlist secret
    assert job_secrets["MLFLOW_READER_PASSWORD"] == "garmentseg-mlflow-reader"  # pragma: allowlist secret
    policy = objects("NetworkPolicy")["mlflow-ingress"]["spec"]["ingress"][0]["from"]
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    assert any(labels_match(peer["podSelector"]["matchLabels"], job_labels) for peer in policy)

    def env_from_secrets(container: dict[str, Any]) -> set[str]:
        return {ref["secretRef"]["name"] for ref in container.get("envFrom", []) if "secretRef" in ref}

    (bento,) = objects("Deployment")["garmentseg-bento"]["spec"]["template"]["spec"]["containers"]
    assert "garmentseg-mlflow-reader" in env_from_secrets(bento)
    assert "garmentseg-mlflow-pipeline" not in env_from_secrets(bento)
    (trainer,) = pod_template()["spec"]["containers"]
    assert "garmentseg-mlflow-pipeline" in env_from_secrets(trainer)
    assert "garmentseg-mlflow-pipeline" in re.findall(r"name: ([a-z0-9-]+)", helm_values()["extraEnvFrom"])
