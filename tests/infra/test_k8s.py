"""Kubernetes manifests (kustomize): strict schema validation, resources, probes, GPU pod template, network policies, secrets by reference. Static: no engine, cluster or Docker here."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
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
    compose_services,
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
    variable_default,
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


def _admitted(target: dict[str, str], port: int) -> list[dict[str, str]]:
    """The pod selectors the NetworkPolicies selecting TARGET admit, each rule on PORT only."""
    peers = []
    selecting = [
        p
        for p in objects("NetworkPolicy").values()
        if labels_match(p["spec"]["podSelector"]["matchLabels"], target)
    ]
    assert selecting, f"no NetworkPolicy selects pods labelled {target}"
    for policy in selecting:
        for rule in policy["spec"]["ingress"]:
            assert [p["port"] for p in rule["ports"]] == [port]
            peers += [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    return peers


def _reaches(peers: list[dict[str, str]], labels: dict[str, str]) -> bool:
    return any(labels_match(peer, labels) for peer in peers)


def _pod_labels(kind: str, name: str) -> dict[str, str]:
    return objects(kind)[name]["spec"]["template"]["metadata"]["labels"]


def test_network_policies_admit_only_the_right_clients_to_registry_and_db() -> None:
    postgres = _pod_labels("StatefulSet", "postgres")
    mlflow = _pod_labels("Deployment", "mlflow")
    bento = _pod_labels("Deployment", "garmentseg-bento")
    training = pod_template()["metadata"]["labels"]

    db_clients = _admitted(postgres, 5432)
    assert _reaches(db_clients, mlflow)
    assert _reaches(db_clients, {"tier": "airflow", "release": "airflow", "component": "scheduler"})
    assert not _reaches(db_clients, bento) and not _reaches(db_clients, training)
    registry_clients = _admitted(mlflow, 5000)
    assert _reaches(registry_clients, bento) and _reaches(registry_clients, training)
    assert _reaches(registry_clients, {"tier": "airflow", "release": "airflow", "component": "worker"})
    assert not _reaches(registry_clients, postgres)


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


def test_tasks_note_dag_runs_through_the_charts_api_server_as_an_account_that_may(cfg: Config) -> None:
    env = objects("ConfigMap")["garmentseg-env"]["data"]
    api = urlsplit(env["GARMENTSEG__AIRFLOW__API_URL"])
    execution = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (api.hostname, api.port) == (execution.hostname, execution.port), "the chart's api-server"
    values = helm_values()
    roles = dict(u.split(":") for u in values["config"]["core"]["simple_auth_manager_users"].split(","))
    assert roles.get(env[cfg.airflow.api_user_env]) in ("user", "op", "admin")
    assert "airflow-api-pipeline" in re.findall(r"name: ([a-z0-9-]+)", values["extraEnvFrom"])
    readme = (ROOT / "infra" / "README.md").read_text()
    assert f"airflow-api-pipeline $ns --from-literal={cfg.airflow.api_password_env}=" in readme


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

    job = objects("Job")["mlflow-auth-bootstrap"]
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


# ------------------------------------------------------------------------------------- MinIO (S3)
MINIO_INIT = MANIFESTS / "minio" / "init-minio.sh"
MINIO_POLICY = MANIFESTS / "minio" / "platform-policy.json"
AIRFLOW_WORKER = {"tier": "airflow", "release": "airflow", "component": "worker"}


def _container(kind: str, name: str) -> dict[str, Any]:
    (container,) = objects(kind)[name]["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _env_from(container: dict[str, Any], key: str) -> set[str]:
    return {ref[key]["name"] for ref in container.get("envFrom", []) if key in ref}


def _created_buckets() -> set[str]:
    (line,) = [line for line in MINIO_INIT.read_text().splitlines() if line.startswith("mc mb ")]
    return {arg.split("/", 1)[1] for arg in line.split() if arg.startswith("local/")}


def test_minio_is_pinned_as_compose_pins_it_with_a_volume_and_root_credentials_from_a_secret() -> None:
    compose = compose_services()
    minio = _container("StatefulSet", "minio")
    assert minio["image"] == variable_default(compose["minio"]["image"], "MINIO_IMAGE")
    assert re.search(r":RELEASE\.\d{4}-\d\d-\d\dT", minio["image"]), "pinned to a release, never latest"
    init = _container("Job", "minio-init")
    assert init["image"] == variable_default(compose["minio-init"]["image"], "MINIO_MC_IMAGE")
    data_dir = minio["args"][minio["args"].index("server") + 1]
    (claim,) = objects("StatefulSet")["minio"]["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": data_dir} in minio["volumeMounts"]
    for container in (minio, init):
        assert "garmentseg-minio-root" in _env_from(container, "secretRef")
        literal = [k for k in _env(container) if k.startswith(("MINIO_ROOT_", "AWS_"))]
        assert not literal, f"{container['name']}: credentials {literal} must come from a Secret"
    assert "garmentseg-s3" in _env_from(init, "secretRef"), "the Job creates the platform's user"
    service = objects("Service")["minio"]
    assert labels_match(service["spec"]["selector"], _pod_labels("StatefulSet", "minio"))
    ports = {p["name"]: p["containerPort"] for p in minio["ports"]}
    assert [ports[p["targetPort"]] for p in service["spec"]["ports"]] == [9000], "the S3 API only"
    assert minio["readinessProbe"]["httpGet"]["path"] == "/minio/health/ready"


def test_every_s3_consumer_points_at_the_minio_service_and_the_buckets_minio_init_creates() -> None:
    service = objects("Service")["minio"]
    service_ports = [p["port"] for p in service["spec"]["ports"]]
    env = objects("ConfigMap")["garmentseg-env"]["data"]
    mlflow = _container("Deployment", "mlflow")
    init = _container("Job", "minio-init")
    endpoints = {
        "ConfigMap garmentseg-env GARMENTSEG_S3_ENDPOINT_URL (DVC)": env["GARMENTSEG_S3_ENDPOINT_URL"],
        "MLflow MLFLOW_S3_ENDPOINT_URL (artifacts)": _env(mlflow)["MLFLOW_S3_ENDPOINT_URL"],
        "minio-init MINIO_URL": _env(init)["MINIO_URL"],
    }
    for consumer, endpoint in endpoints.items():
        url = urlsplit(endpoint)
        assert (url.hostname, url.port) == ("minio", 9000) and 9000 in service_ports, (consumer, endpoint)

    remote = urlsplit(env["GARMENTSEG__PATHS__DVC_REMOTE"])
    artifacts = urlsplit(_env(mlflow)["MLFLOW_ARTIFACTS_DESTINATION"])
    assert remote.scheme == artifacts.scheme == "s3"
    assert _created_buckets() == {remote.netloc, artifacts.netloc}, "the Job creates exactly what is used"
    compose_env = compose_services()["airflow-worker"]["environment"]
    compose_artifacts = compose_services()["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"]
    assert compose_env["GARMENTSEG__PATHS__DVC_REMOTE"] == env["GARMENTSEG__PATHS__DVC_REMOTE"]
    assert compose_artifacts == _env(mlflow)["MLFLOW_ARTIFACTS_DESTINATION"]

    # The platform's credentials (garmentseg-s3) and the endpoint (garmentseg-env) reach every S3 client.
    (trainer,) = pod_template()["spec"]["containers"]
    helm_env_from = re.findall(r"name: ([a-z0-9-]+)", helm_values()["extraEnvFrom"])
    assert {"garmentseg-env", "garmentseg-s3"} <= _env_from(trainer, "configMapRef") | _env_from(
        trainer, "secretRef"
    )
    assert {"garmentseg-env", "garmentseg-s3"} <= set(helm_env_from)
    assert "garmentseg-s3" in _env_from(mlflow, "secretRef")
    bento = _container("Deployment", "garmentseg-bento")
    assert "garmentseg-s3" not in _env_from(bento, "secretRef"), "the service loads models through MLflow"


def test_the_platforms_s3_user_reaches_its_two_buckets_and_nothing_else() -> None:
    script = MINIO_INIT.read_text()
    assert re.search(r"^mc admin policy create local (\S+) \"\$here/platform-policy.json\"$", script, re.M)
    assert "readwrite" not in script and "consoleAdmin" not in script, "no built-in broad policy"
    policy = json.loads(MINIO_POLICY.read_text())
    buckets = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert all(re.fullmatch(r"s3:[A-Za-z]+", a) for a in statement["Action"]), statement["Action"]
        for arn in statement["Resource"]:
            match = re.fullmatch(r"arn:aws:s3:::([a-z0-9.-]+)(/\*)?", arn)
            assert match, f"{MINIO_POLICY.name}: {arn} is not one bucket or its objects"
            buckets.add(match.group(1))
    assert buckets == _created_buckets()
    job = objects("Job")["minio-init"]["spec"]["template"]["spec"]
    (script_volume,) = [v for v in job["volumes"] if "configMap" in v]
    generated = {g["name"]: g["files"] for g in kustomization()["configMapGenerator"]}
    assert {MINIO_INIT.name, MINIO_POLICY.name} == {
        Path(f).name for f in generated[script_volume["configMap"]["name"]]
    }
    compose_init = compose_services()["minio-init"]
    assert "../k8s/manifests/minio:/opt/minio-init:ro" in compose_init["volumes"], "one script for both"
    assert compose_init["environment"]["AWS_ACCESS_KEY_ID"] == "${S3_ACCESS_KEY_ID:?}"


def test_only_the_s3_clients_reach_minio() -> None:
    clients = _admitted(_pod_labels("StatefulSet", "minio"), 9000)
    for name, labels in {
        "a Celery worker or KubernetesExecutor task pod": AIRFLOW_WORKER,
        "a GPU training pod": pod_template()["metadata"]["labels"],
        "the MLflow server": _pod_labels("Deployment", "mlflow"),
        "the minio-init Job": _pod_labels("Job", "minio-init"),
    }.items():
        assert _reaches(clients, labels), f"{name} cannot reach MinIO"
    for name, labels in {
        "the Bento service": _pod_labels("Deployment", "garmentseg-bento"),
        "the scheduler": {**AIRFLOW_WORKER, "component": "scheduler"},
        "the api-server": {**AIRFLOW_WORKER, "component": "api-server"},
        "PostgreSQL": _pod_labels("StatefulSet", "postgres"),
    }.items():
        assert not _reaches(clients, labels), f"{name} reaches MinIO"
