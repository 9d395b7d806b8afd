"""The Dockerfile and .dockerignore: built from the lock as non-root, no secrets baked in, copies exactly what it needs. Static: no engine, cluster or Docker here."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess

from tests.infra.infra_files import (
    COMPOSE,
    DOCKERFILE,
    DOCKERIGNORE,
    README,
    SECRET_KEY,
    compose_services,
    dockerfile,
    dockerfile_vars,
    helm_values,
    pod_specs,
    secret_findings,
)


def test_dockerfile_builds_from_the_lock_as_a_non_root_user() -> None:
    instructions = dockerfile()
    runs = " ".join(args for instr, args in instructions if instr == "RUN")
    assert "uv sync --frozen --no-dev" in runs and "pip install" not in runs
    stages = [args.split() for instr, args in instructions if instr == "FROM"]
    assert len(stages) >= 3, "multi-stage: build, variant bases, runtime"
    assert {"base-cpu", "base-gpu"} <= {s[-1] for s in stages if len(s) == 3}
    users = [args for instr, args in instructions if instr == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    uid = int(users[-1].split(":")[0])
    for where, template in pod_specs():
        if template["spec"]["containers"][0]["image"].startswith("garmentseg:"):
            assert template["spec"]["securityContext"]["runAsUser"] == uid, where
    assert helm_values()["securityContexts"]["pod"]["runAsUser"] == uid
    assert any(instr == "HEALTHCHECK" and "CMD" in args for instr, args in instructions)
    assert dockerfile_vars("ARG")["GPU_BASE"].startswith("nvidia/cuda:")


def test_dockerfile_bakes_in_no_secrets_and_names_the_bento_service() -> None:
    from garmentseg.deploy import SERVICE_TARGET

    variables = {**dockerfile_vars("ARG"), **dockerfile_vars("ENV")}
    leaking = [name for name in variables if SECRET_KEY.search(name)]
    assert not leaking, f"ENV/ARG with secret-looking names: {leaking}"
    assert not secret_findings(DOCKERFILE)
    assert variables["BENTO_SERVICE"] == SERVICE_TARGET
    assert variables["GARMENTSEG_PARAMS"] == "/app/params.yaml"


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    patterns = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert patterns[0] == "**", ".dockerignore is an allow-list: everything out, then exceptions"
    allowed = [p[1:] for p in patterns if p.startswith("!")]
    assert not [a for a in allowed if a.startswith((".env", ".git", "var", "data", ".venv"))]
    sources = []
    for instr, args in dockerfile():
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


def test_the_build_commit_is_a_required_argument_baked_in_as_garmentseg_git_commit() -> None:
    """Images cannot be built here: the build-time lineage is checked in the recipe and its commands."""
    instructions = dockerfile()
    runtime = max(i for i, (instr, _) in enumerate(instructions) if instr == "FROM")
    declared = [i for i, (instr, args) in enumerate(instructions) if instr == "ARG" and args == "GIT_COMMIT"]
    assert declared and declared[0] > runtime, "ARG GIT_COMMIT belongs to the runtime stage"
    assert dockerfile_vars("ENV")["GARMENTSEG_GIT_COMMIT"] == "${GIT_COMMIT}"
    (check,) = [
        args for instr, args in instructions[declared[0] :] if instr == "RUN" and "GIT_COMMIT" in args
    ]
    # the recipe's own check, run by a shell: a missing or `unknown` commit stops the build, a sha passes
    for commit, code in (("", 1), ("unknown", 1), ("0123456789abcdef" * 2 + "01234567", 0)):
        done = subprocess.run(["sh", "-c", check], env={"GIT_COMMIT": commit, "PATH": "/usr/bin:/bin"})
        assert done.returncode == code, f"GIT_COMMIT={commit!r}: exit {done.returncode}"
    documented = [
        line for line in (README.read_text() + DOCKERFILE.read_text()).splitlines() if "docker build" in line
    ]
    assert len(documented) >= 4
    for line in documented:
        assert "--build-arg GIT_COMMIT=$(git rev-parse HEAD)" in line, line
    assert "GIT_COMMIT=$(git rev-parse HEAD) docker compose build" in README.read_text()
    assert "GIT_COMMIT=$(git rev-parse HEAD) docker compose build" in COMPOSE.read_text()
    built = [s for s in compose_services().values() if "build" in s]
    assert built and all(s["build"]["args"]["GIT_COMMIT"] == "${GIT_COMMIT:-}" for s in built)


def test_the_image_is_a_dvc_project_without_git_that_the_service_user_writes() -> None:
    """The data plane runs DVC in /app on every node; .git never enters the image, so DVC runs without SCM."""
    instructions = dockerfile()
    runtime = max(i for i, (instr, _) in enumerate(instructions) if instr == "FROM")
    workdirs = [args for instr, args in instructions[runtime:] if instr == "WORKDIR"]
    assert workdirs[-1] == "/app" and dockerfile_vars("ENV")["GARMENTSEG_PARAMS"] == "/app/params.yaml"
    runs = [args for instr, args in instructions[runtime:] if instr == "RUN"]
    (init,) = [run for run in runs if "dvc init" in run]
    assert "dvc init --no-scm" in init
    uid = [args for instr, args in instructions if instr == "USER"][-1].split(":")[0]
    assert f"chown -R {uid}:0 /app/.dvc" in init, "DVC's cache and config.local are written at run time"
