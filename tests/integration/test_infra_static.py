"""infra/ checked without engines: Kubernetes schemas, compose structure, Dockerfiles, Helm values, lint,
and a scan of the whole repository for committed secrets. Fast and offline (no Docker, no cluster here)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from garmentseg.config import AirflowConfig, Config, load_config

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose" / "docker-compose.yaml"
ENV_EXAMPLE = INFRA / "compose" / ".env.example"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MANIFESTS = INFRA / "k8s" / "manifests"
HELM_VALUES = INFRA / "k8s" / "airflow" / "values.yaml"
README = INFRA / "README.md"
K8S_VERSION = "1.31"
PLACEHOLDER = "change-me"
# Container-level resources every Deployment, StatefulSet and pod template must request and cap.
RESOURCE_KINDS = ("cpu", "memory")
# The mode switches of infra/README.md#configuration.
MODE_VARIABLES = (
    "GARMENTSEG_PROFILE",
    "GARMENTSEG__AIRFLOW__PLACEMENT",
    "MLFLOW_TRACKING_URI",
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
)


# ---------------------------------------------------------------------------------------------- helpers
@cache
def _yaml_docs(path: Path) -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.safe_load_all(path.read_text()) if doc)


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())


def _rendered() -> list[tuple[str, dict[str, Any]]]:
    """What `kubectl apply -k` creates: every listed resource in the namespace, plus generated ConfigMaps."""
    kust = _kustomization()
    out: list[tuple[str, dict[str, Any]]] = []
    for name in kust["resources"]:
        for doc in _yaml_docs(MANIFESTS / name):
            if doc["kind"] != "Namespace":
                doc = {**doc, "metadata": {**doc["metadata"], "namespace": kust["namespace"]}}
            out.append((name, doc))
    for gen in kust.get("configMapGenerator", []):
        data = {Path(f).name: (MANIFESTS / f).read_text() for f in gen["files"]}
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}
        out.append(("kustomization.yaml", doc))
    return out


def _objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _rendered() if doc["kind"] == kind}


def _pod_template() -> dict[str, Any]:
    (text,) = _objects("ConfigMap")["garmentseg-gpu-pod-template"]["data"].values()
    return yaml.safe_load(text)


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("Deployment", "StatefulSet"):
        for name, doc in _objects(kind).items():
            yield f"{kind}/{name}", doc["spec"]["template"]
    yield "gpu pod template", _pod_template()


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@cache
def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _variable_default(text: str, variable: str) -> str:
    """The default of ${variable:-default} in text."""
    match = re.search(rf"\$\{{{variable}:-([^}}]*)\}}", text)
    assert match, f"no ${{{variable}:-...}} in {text!r}"
    return match.group(1)


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _dockerfile_vars(instruction: str) -> dict[str, str]:
    """Names and defaults of every ARG or ENV (ENV a=b c=d and ARG a=b forms)."""
    out: dict[str, str] = {}
    for instr, args in _dockerfile():
        if instr == instruction:
            for token in shlex.split(args):
                name, _, value = token.partition("=")
                out[name] = value
    return out


def _locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (version,) = [p["version"] for p in lock["package"] if p["name"] == package]
    return version


# ---------------------------------------------------------------------------------------- secret scan
SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|private[_-]?key|fernet[_-]?key)")
# Keys that name a secret (a Secret's name, a variable's name, a file), rather than hold one.
NAMING_KEY = re.compile(r"(?i)(name|names|file|path|env|ref|dir|mount|key_id)$")
# key = value, key=value or key: value (YAML), not inside ${...}; the value stops at quotes and separators.
ASSIGNMENT = re.compile(
    r"""(?<![\w${.-])(?P<key>[A-Za-z_][\w.-]*)["']?(?:\s*=|:)\s*(?P<q>["']?)(?P<value>[^\s"'#,;)\]}]*)"""
)
# Files whose bare values are data; elsewhere (code, prose) only a quoted literal is a value.
CONFIG_SUFFIXES = (
    ".yaml",
    ".yml",
    ".env",
    ".example",
    ".ini",
    ".cfg",
    ".conf",
    ".toml",
    ".json",
    ".properties",
)
URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]*:(?P<password>[^\s@/'\"]+)@", re.IGNORECASE)
TOKEN_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "API secret key": re.compile(r"\bsk-[A-Za-z0-9_-]{32,}\b"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}
# A value that points at a secret instead of being one: a variable, a template, a placeholder, a path.
REFERENCE = re.compile(r"^(\$|<|\{|%|…|\*|/|\.\.?/|[A-Z][A-Z0-9_]*$)")
# Throwaway credentials of test engines are fixtures, not secrets; key and token formats are checked there too.
FIXTURE_DIRS = ("tests/",)


def _is_reference(value: str) -> bool:
    return (
        not value or bool(REFERENCE.match(value)) or value.lower() in {"true", "false", "null", "none", "~"}
    )


def secret_findings(rel: str, text: str) -> list[str]:
    """Secret-looking content of one file, as 'path:line: what' strings."""
    findings = []
    fixture = rel.startswith(FIXTURE_DIRS)
    env_example = Path(rel).name == ".env.example"
    config = rel.endswith(CONFIG_SUFFIXES) or Path(rel).name in {"Dockerfile", ".env"}
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{rel}:{number}"
        findings += [f"{where}: {what}" for what, rx in TOKEN_PATTERNS.items() if rx.search(line)]
        if fixture:
            continue
        for match in URL_CREDENTIALS.finditer(line):
            if not _is_reference(match.group("password")):
                findings.append(f"{where}: password inside a URL")
        for match in ASSIGNMENT.finditer(line):
            key, value = match.group("key"), match.group("value")
            if not SECRET_KEY.search(key) or NAMING_KEY.search(key) or "://" in value:
                continue
            if not (config or match.group("q")):
                continue
            if env_example and value == PLACEHOLDER:
                continue
            if not _is_reference(value):
                findings.append(f"{where}: {key} holds a literal ({value[:4]}...)")
    return findings


def _repository_text_files() -> Iterator[tuple[str, str]]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        path = ROOT / rel
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        raw = path.read_bytes()
        if b"\0" in raw[:8192]:
            continue
        try:
            yield rel, raw.decode("utf-8")
        except UnicodeDecodeError:
            continue


# ------------------------------------------------------------------------------------------ Kubernetes
def test_kustomization_lists_existing_files_in_the_params_namespace(cfg: Config) -> None:
    kust = _kustomization()
    assert kust["namespace"] == cfg.airflow.kubernetes.namespace
    listed = [*kust["resources"], *(f for g in kust.get("configMapGenerator", []) for f in g["files"])]
    missing = [f for f in listed if not (MANIFESTS / f).is_file()]
    assert not missing, f"kustomization.yaml lists files that do not exist: {missing}"
    unlisted = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", *kust["resources"]}
    assert not unlisted, f"manifests not in kustomization.yaml resources (never applied): {unlisted}"
    assert _objects("Namespace") == {} or set(_objects("Namespace")) == {kust["namespace"]}


@pytest.mark.parametrize(
    ("source", "doc"),
    [*_rendered(), ("gpu-pod-template.yaml (embedded Pod)", _pod_template())],
    ids=lambda v: v if isinstance(v, str) else f"{v['kind']}/{v['metadata']['name']}",
)
def test_manifest_validates_against_the_kubernetes_schema(source: str, doc: dict[str, Any]) -> None:
    try:
        _validate(doc)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(
            f"{source}: {doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc}"
        )


def test_the_schema_check_rejects_a_broken_manifest() -> None:
    """The validator is strict: an unknown field and a malformed quantity both fail."""
    deployment = _objects("Deployment")["garmentseg-bento"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken)
    pod = _pod_template()
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(pod)


@pytest.mark.parametrize(
    ("where", "template"), list(_pod_specs()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_container_has_requests_and_limits(where: str, template: dict[str, Any]) -> None:
    for container in template["spec"]["containers"]:
        resources = container.get("resources", {})
        for side in ("requests", "limits"):
            missing = [k for k in RESOURCE_KINDS if k not in resources.get(side, {})]
            assert not missing, f"{where}: container {container['name']} has no {side} for {missing}"


def test_bento_deployment_probes_and_autoscaler() -> None:
    deployment = _objects("Deployment")["garmentseg-bento"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert "command" not in container and "args" not in container, (
        "the image's default command serves the Bento"
    )
    hpa = _objects("HorizontalPodAutoscaler")["garmentseg-bento"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "garmentseg-bento")
    assert hpa["spec"]["minReplicas"] >= 2 <= hpa["spec"]["maxReplicas"]


def test_gpu_pod_template_matches_params(cfg: Config) -> None:
    k8s = cfg.airflow.kubernetes
    spec = _pod_template()["spec"]
    (base,) = spec["containers"]
    assert base["name"] == "base", "the pod operator and the executor look for the container named base"
    assert base["image"] == k8s.image
    assert spec["nodeSelector"] == k8s.node_selector
    assert spec["tolerations"] == [dict(t) for t in k8s.tolerations]
    for side in ("requests", "limits"):
        assert int(base["resources"][side]["nvidia.com/gpu"]) == k8s.gpu_limit
    assert spec["serviceAccountName"] in _objects("ServiceAccount")
    assert {"configMapRef": {"name": "garmentseg-env"}} in base["envFrom"]


def test_network_policies_admit_only_the_right_clients_to_registry_and_db() -> None:
    policies = _objects("NetworkPolicy")
    postgres = _objects("StatefulSet")["postgres"]["spec"]["template"]["metadata"]["labels"]
    mlflow = _objects("Deployment")["mlflow"]["spec"]["template"]["metadata"]["labels"]
    bento = _objects("Deployment")["garmentseg-bento"]["spec"]["template"]["metadata"]["labels"]
    training = _pod_template()["metadata"]["labels"]

    def admitted(target: dict[str, str], port: int) -> list[dict[str, str]]:
        peers = []
        selecting = [
            p for p in policies.values() if _labels_match(p["spec"]["podSelector"]["matchLabels"], target)
        ]
        assert selecting, f"no NetworkPolicy selects pods labelled {target}"
        for policy in selecting:
            for rule in policy["spec"]["ingress"]:
                assert [p["port"] for p in rule["ports"]] == [port]
                peers += [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
        return peers

    def reaches(peers: list[dict[str, str]], labels: dict[str, str]) -> bool:
        return any(_labels_match(peer, labels) for peer in peers)

    db_clients = admitted(postgres, 5432)
    assert reaches(db_clients, mlflow)
    assert reaches(db_clients, {"tier": "airflow", "release": "airflow", "component": "scheduler"})
    assert not reaches(db_clients, bento) and not reaches(db_clients, training)
    registry_clients = admitted(mlflow, 5000)
    assert reaches(registry_clients, bento) and reaches(registry_clients, training)
    assert reaches(registry_clients, {"tier": "airflow", "release": "airflow", "component": "worker"})
    assert not reaches(registry_clients, postgres)


def _references(tree: Any, key: str) -> Iterator[str]:
    """Every `name` under a `key` mapping (secretKeyRef, secretRef, configMapRef, ...) anywhere in tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key and isinstance(v, dict):
                yield v.get("name") or v.get("secretName")
            else:
                yield from _references(v, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from _references(item, key)


def _helm_values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def _created_in_readme(kind: str) -> set[str]:
    return set(re.findall(rf"kubectl create {kind}(?: generic)? ([a-z0-9-]+)", README.read_text()))


def test_secrets_are_referenced_never_inlined_and_each_is_documented() -> None:
    docs = [doc for _, doc in _rendered()] + [_pod_template()]
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created with kubectl, never committed"
    values = _helm_values()
    secrets = {
        *(n for key in ("secretKeyRef", "secretRef") for n in _references(docs, key)),
        *(v["secret"]["secretName"] for v in values["volumes"] if "secret" in v),
        values["data"]["metadataSecretName"],
        values["data"]["brokerUrlSecretName"],
        values["fernetKeySecretName"],
        values["apiSecretKeySecretName"],
        values["jwtSecretName"],
        values["redis"]["passwordSecretName"],
        *re.findall(r"name: ([a-z0-9-]+)", values["extraEnvFrom"]),
    } - set(_objects("ConfigMap"))
    undocumented = secrets - _created_in_readme("secret")
    assert not undocumented, f"Secrets referenced but not created in infra/README.md: {sorted(undocumented)}"
    config_maps = {
        *(n for key in ("configMapKeyRef", "configMapRef", "configMap") for n in _references(docs, key)),
        *(v["configMap"]["name"] for v in values["volumes"] if "configMap" in v),
    }
    unknown = config_maps - set(_objects("ConfigMap")) - _created_in_readme("configmap")
    assert not unknown, (
        f"ConfigMaps referenced but neither in the manifests nor in infra/README.md: {unknown}"
    )
    for doc in docs:
        for env in _env_entries(doc):
            if SECRET_KEY.search(env["name"]):
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{env['name']} must come from a Secret"


def _env_entries(tree: Any) -> Iterator[dict[str, Any]]:
    if isinstance(tree, dict):
        if isinstance(tree.get("env"), list):
            yield from tree["env"]
        for value in tree.values():
            yield from _env_entries(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _env_entries(item)


def test_cluster_mode_switches_are_valid_and_point_at_real_services(cfg: Config) -> None:
    env = _objects("ConfigMap")["garmentseg-env"]["data"]
    load_config(env["GARMENTSEG_PROFILE"], ROOT / "params.yaml")
    placements = typing.get_args(AirflowConfig.model_fields["placement"].annotation)
    assert env["GARMENTSEG__AIRFLOW__PLACEMENT"] in placements
    tracking = urlsplit(env["MLFLOW_TRACKING_URI"])
    service = _objects("Service")[tracking.hostname]
    assert tracking.port in [p["port"] for p in service["spec"]["ports"]]


# ----------------------------------------------------------------------------------------- Helm values
def test_airflow_helm_values_name_executor_image_and_secrets() -> None:
    values = _helm_values()
    executors = values["executor"].split(",")
    assert {"CeleryExecutor", "KubernetesExecutor"} <= set(executors)
    assert "CeleryKubernetesExecutor" not in executors, "CeleryKubernetesExecutor does not run on Airflow 3"
    assert values["airflowVersion"] == _locked_version("apache-airflow")
    image = f"{values['images']['airflow']['repository']}:{values['images']['airflow']['tag']}"
    assert image == _variable_default(_services()["airflow-scheduler"]["image"], "GARMENTSEG_IMAGE")
    assert image == _objects("Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert values["data"]["metadataSecretName"]
    assert values["postgresql"]["enabled"] is False
    inline = {"fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey"} & set(values)
    assert not inline and not {"metadataConnection", "brokerUrl"} & set(values["data"]), (
        "secrets belong in Secrets"
    )
    assert not values["dags"]["gitSync"]["enabled"], "DAGs are baked into the image"
    assert values["config"]["core"]["dags_folder"] == _dockerfile_vars("ENV")["AIRFLOW__CORE__DAGS_FOLDER"]


def test_gpu_pod_template_is_mounted_where_the_readme_says() -> None:
    values = _helm_values()
    (volume,) = [
        v for v in values["volumes"] if v.get("configMap", {}).get("name") == "garmentseg-gpu-pod-template"
    ]
    (mount,) = [m for m in values["volumeMounts"] if m["name"] == volume["name"]]
    (key,) = _objects("ConfigMap")["garmentseg-gpu-pod-template"]["data"]
    assert f"{mount['mountPath']}/{key}" in README.read_text()


# ---------------------------------------------------------------------------------------------- compose
def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in _services().items():
        if service.get("restart") == "no":
            assert _command(service), f"one-shot {name} runs nothing"
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_depends_on_targets_exist_and_conditions_fit_them() -> None:
    services = _services()
    one_shots = {n for n, s in services.items() if s.get("restart") == "no"}
    awaited = set()
    for name, service in services.items():
        for target, condition in _depends_on(service).items():
            assert target in services and target != name, f"{name} depends on unknown service {target}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target}, which has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert target in one_shots, f"{name} waits for {target} to finish, but it runs forever"
                awaited.add(target)
    assert awaited == one_shots, f"one-shot services nothing waits for: {one_shots - awaited}"


def test_gpu_worker_reserves_a_gpu_and_serves_the_params_queue(cfg: Config) -> None:
    gpu_workers = [s for s in _services().values() if cfg.airflow.gpu_queue in _queues(s)]
    (worker,) = gpu_workers
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert _variable_default(worker["image"], "GARMENTSEG_GPU_IMAGE") == cfg.airflow.kubernetes.image
    assert worker["build"]["args"]["VARIANT"] == "gpu"
    cpu_worker = _services()["airflow-worker"]
    assert "deploy" not in cpu_worker and _queues(cpu_worker) == ["${AIRFLOW_CPU_WORKER_QUEUES:-default}"]


def _queues(service: dict[str, Any]) -> list[str]:
    cmd = _command(service)
    return cmd[cmd.index("--queues") + 1].split(",") if "--queues" in cmd else []


def test_airflow_init_migrates_and_creates_the_dvc_pool(cfg: Config) -> None:
    script = " ".join(_command(_services()["airflow-init"]))
    assert "airflow db migrate" in script
    assert re.search(rf"airflow pools set {cfg.airflow.dvc_pool} 1 ", script)


def test_compose_mode_switches_and_service_urls() -> None:
    services = _services()
    for name in ("airflow-scheduler", "airflow-worker", "airflow-worker-gpu", "airflow-apiserver"):
        env = services[name]["environment"]
        missing = [v for v in MODE_VARIABLES if v not in env]
        assert not missing, f"{name} lacks {missing}"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        for variable, service in (
            ("MLFLOW_TRACKING_URI", "mlflow"),
            ("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "airflow-apiserver"),
        ):
            url = urlsplit(env[variable])
            assert url.hostname == service and str(url.port) in _command(services[service])
    mlflow = services["mlflow"]
    assert "--serve-artifacts" in _command(mlflow)
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert urlsplit(mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"]).hostname == "minio"


def _environment_values() -> Iterator[tuple[str, str, str]]:
    for name, service in _services().items():
        env = service.get("environment", {})
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        for key, value in items:
            yield name, key, str(value)


def test_compose_secrets_come_from_required_variables_documented_in_env_example() -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?[^}]*\}", json.dumps(_compose())))
    for service, key, value in _environment_values():
        url = URL_CREDENTIALS.search(value)
        if url:
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?\}", url.group("password")), (
                f"{service}.{key}: URL password"
            )
        elif SECRET_KEY.search(key) and not NAMING_KEY.search(key):
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?\}", value), (
                f"{service}.{key} must be a required ${{VAR:?}}"
            )
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required <= set(example), f"required but not in .env.example: {required - set(example)}"
    secrets = {k for k in example if SECRET_KEY.search(k) or k.startswith(("MINIO_ROOT_", "S3_"))}
    assert secrets and all(example[k] == PLACEHOLDER for k in secrets), "only placeholders in .env.example"
    assert secrets <= required, f"secrets compose does not require: {secrets - required}"
    assert not secret_findings(str(COMPOSE.relative_to(ROOT)), COMPOSE.read_text())


# ----------------------------------------------------------------------------------------------- images
def test_dockerfile_builds_from_the_lock_as_a_non_root_user() -> None:
    instructions = _dockerfile()
    runs = " ".join(args for instr, args in instructions if instr == "RUN")
    assert "uv sync --frozen --no-dev" in runs and "pip install" not in runs
    stages = [args.split() for instr, args in instructions if instr == "FROM"]
    assert len(stages) >= 3, "multi-stage: build, variant bases, runtime"
    assert {"base-cpu", "base-gpu"} <= {s[-1] for s in stages if len(s) == 3}
    users = [args for instr, args in instructions if instr == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    uid = int(users[-1].split(":")[0])
    for where, template in _pod_specs():
        if template["spec"]["containers"][0]["image"].startswith("garmentseg:"):
            assert template["spec"]["securityContext"]["runAsUser"] == uid, where
    assert _helm_values()["securityContexts"]["pod"]["runAsUser"] == uid
    assert any(instr == "HEALTHCHECK" and "CMD" in args for instr, args in instructions)
    assert _dockerfile_vars("ARG")["GPU_BASE"].startswith("nvidia/cuda:")


def test_dockerfile_bakes_in_no_secrets_and_names_the_bento_service() -> None:
    from garmentseg.deploy import SERVICE_TARGET

    variables = {**_dockerfile_vars("ARG"), **_dockerfile_vars("ENV")}
    leaking = [name for name in variables if SECRET_KEY.search(name)]
    assert not leaking, f"ENV/ARG with secret-looking names: {leaking}"
    assert not secret_findings(str(DOCKERFILE.relative_to(ROOT)), DOCKERFILE.read_text())
    assert variables["BENTO_SERVICE"] == SERVICE_TARGET
    assert variables["GARMENTSEG_PARAMS"] == "/app/params.yaml"


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    patterns = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert patterns[0] == "**", ".dockerignore is an allow-list: everything out, then exceptions"
    allowed = [p[1:] for p in patterns if p.startswith("!")]
    assert not [a for a in allowed if a.startswith((".env", ".git", "var", "data", ".venv"))]
    sources = []
    for instr, args in _dockerfile():
        if instr == "COPY" and "--from=" not in args:
            sources += [s for s in shlex.split(args)[:-1] if not s.startswith("--")]
        sources += re.findall(r"type=bind,source=([^,\s]+)", args)
    for source in sources:
        covered = any(
            source == a or source.startswith(a + "/") or fnmatch.fnmatch(a, source) for a in allowed
        )
        assert covered, f"the Dockerfile copies {source}, which .dockerignore leaves out"
    for needed in ("uv.lock", "pyproject.toml", "src", "dags", "bentos", "params.yaml"):
        assert needed in sources, f"the image lacks {needed}"


# ------------------------------------------------------------------------------------------ lint, docs
def test_yamllint_passes_on_infra() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(INFRA / ".yamllint"), str(INFRA)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_documents_the_mode_switches_with_a_diagram() -> None:
    text = README.read_text()
    assert "```mermaid" in text
    table = [line for line in text.splitlines() if line.startswith("| `")]
    for variable in MODE_VARIABLES:
        assert any(f"`{variable}`" in row for row in table), f"{variable} is not in the README's table"
    for command in (
        "airflow scheduler",
        "airflow dag-processor",
        "airflow api-server",
        "airflow celery worker",
    ):
        assert f"uv run {command}" in text
    assert "uv run mlflow server --backend-store-uri postgresql://" in text


# ------------------------------------------------------------------------------------------ secret scan
def test_secret_scan_flags_what_it_should_and_passes_references() -> None:
    flagged = {
        "conf.yaml": "db_password: hunter2hunter2",
        "settings.py": 'API_TOKEN = "abcd1234efgh"',
        "app.env": "url=postgresql://app:s3cr3tpw@db:5432/app",
        "notes.md": "key " + "AKIA" + "ABCDEFGHIJKLMNOP",
        "id_rsa": "-----BEGIN " + "RSA PRIVATE KEY-----",
        "infra/docs.md": f'REDIS_PASSWORD="{PLACEHOLDER}"',
        "app/settings.py": 'password = "hunter2hunter2"',
        "x/.env": "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENG",
    }
    for rel, line in flagged.items():
        assert secret_findings(rel, line), f"not flagged: {rel}: {line}"
    passing = {
        "compose.yaml": "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?}",
        "values.yaml": "fernetKeySecretName: airflow-fernet-key",
        "params.yaml": "auth_token_env: GARMENTSEG_API_TOKEN",
        "README.md": 'url="postgresql://airflow:$AIRFLOW_DB_PASSWORD@127.0.0.1:5432/airflow"',
        "x/.env.example": f"REDIS_PASSWORD={PLACEHOLDER}",
        "tests/test_pg.py": 'password = "postgres-fixture"',
        "src/auth.py": 'token = os.environ.get("GARMENTSEG_API_TOKEN")',
        "docs/guide.md": "Use hex secrets: they go into URLs unescaped.",
        "init.sh": 'create_role airflow "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is required}"',
        "init.sql": "CREATE ROLE :\"name\" LOGIN PASSWORD :'password';",
    }
    for rel, line in passing.items():
        assert not secret_findings(rel, line), f"flagged: {rel}: {line}"


def test_nothing_secret_looking_is_committed() -> None:
    files = dict(_repository_text_files())
    assert "pyproject.toml" in files and str(COMPOSE.relative_to(ROOT)) in files
    assert not [rel for rel in files if Path(rel).name == ".env"], "an .env file is tracked or not ignored"
    findings = [finding for rel, text in files.items() for finding in secret_findings(rel, text)]
    assert not findings, "secret-looking content:\n" + "\n".join(findings)
