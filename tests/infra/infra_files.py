"""What the static infra tests read: the files under infra/ parsed once, and small accessors over them."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

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


@cache
def yaml_docs(path: Path) -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.safe_load_all(path.read_text()) if doc)


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())


def rendered() -> list[tuple[str, dict[str, Any]]]:
    """What `kubectl apply -k` creates: every listed resource in the namespace, plus generated ConfigMaps."""
    kust = kustomization()
    out: list[tuple[str, dict[str, Any]]] = []
    for name in kust["resources"]:
        for doc in yaml_docs(MANIFESTS / name):
            if doc["kind"] != "Namespace":
                doc = {**doc, "metadata": {**doc["metadata"], "namespace": kust["namespace"]}}
            out.append((name, doc))
    for gen in kust.get("configMapGenerator", []):
        data = {Path(f).name: (MANIFESTS / f).read_text() for f in gen["files"]}
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}
        out.append(("kustomization.yaml", doc))
    return out


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in rendered() if doc["kind"] == kind}


def pod_template() -> dict[str, Any]:
    (text,) = objects("ConfigMap")["garmentseg-gpu-pod-template"]["data"].values()
    return yaml.safe_load(text)


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("Deployment", "StatefulSet"):
        for name, doc in objects(kind).items():
            yield f"{kind}/{name}", doc["spec"]["template"]
    yield "gpu pod template", pod_template()


def validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def variable_default(text: str, variable: str) -> str:
    """The default of ${variable:-default} in text."""
    match = re.search(rf"\$\{{{variable}:-([^}}]*)\}}", text)
    assert match, f"no ${{{variable}:-...}} in {text!r}"
    return match.group(1)


def dockerfile() -> list[tuple[str, str]]:
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


def dockerfile_vars(instruction: str) -> dict[str, str]:
    """Names and defaults of every ARG or ENV (ENV a=b c=d and ARG a=b forms)."""
    out: dict[str, str] = {}
    for instr, args in dockerfile():
        if instr == instruction:
            for token in shlex.split(args):
                name, _, value = token.partition("=")
                out[name] = value
    return out


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (version,) = [p["version"] for p in lock["package"] if p["name"] == package]
    return version


def references(tree: Any, key: str) -> Iterator[str]:
    """Every `name` under a `key` mapping (secretKeyRef, secretRef, configMapRef, ...) anywhere in tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key and isinstance(v, dict):
                yield v.get("name") or v.get("secretName")
            else:
                yield from references(v, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from references(item, key)


def helm_values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def created_in_readme(kind: str) -> set[str]:
    return set(re.findall(rf"kubectl create {kind}(?: generic)? ([a-z0-9-]+)", README.read_text()))


def env_entries(tree: Any) -> Iterator[dict[str, Any]]:
    if isinstance(tree, dict):
        if isinstance(tree.get("env"), list):
            yield from tree["env"]
        for value in tree.values():
            yield from env_entries(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from env_entries(item)


def queues(service: dict[str, Any]) -> list[str]:
    cmd = command(service)
    return cmd[cmd.index("--queues") + 1].split(",") if "--queues" in cmd else []


def environment_values() -> Iterator[tuple[str, str, str]]:
    for name, service in compose_services().items():
        env = service.get("environment", {})
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        for key, value in items:
            yield name, key, str(value)


# Names that designate a secret: such a key must be fed from a Secret or a required variable, never a literal.
SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|private[_-]?key|fernet[_-]?key)")
# Keys that name a secret (a Secret's name, a variable's name, a file), rather than hold one.
NAMING_KEY = re.compile(r"(?i)(name|names|file|path|env|ref|dir|mount|key_id)$")
URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]*:(?P<password>[^\s@/'\"]+)@", re.IGNORECASE)
BASELINE = ROOT / ".secrets.baseline"


def secret_findings(*paths: Path) -> list[tuple[str, str, str, int]]:
    """What detect-secrets (Yelp's maintained scanner, its default plugins and filters) finds in these files:
    (path relative to the repo when inside it, secret type, hashed secret, line)."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    found = SecretsCollection()
    with default_settings():
        for path in paths:
            found.scan_file(str(path))
    return sorted(
        (_relative(Path(name)), secret.type, secret.secret_hash, secret.line_number or 0)
        for name, secret in found
    )


def audited_false_positives() -> set[tuple[str, str]]:
    """(file, hashed secret) pairs of .secrets.baseline that a person audited as not secret (`is_secret: false`)."""
    baseline = json.loads(BASELINE.read_text())
    return {
        (name, entry["hashed_secret"])
        for name, entries in baseline["results"].items()
        for entry in entries
        if entry.get("is_secret") is False
    }


def repository_files() -> list[Path]:
    """Every file git tracks or would track (untracked, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    return [ROOT / rel for rel in filter(None, listed.split("\0")) if (ROOT / rel).is_file()]


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
