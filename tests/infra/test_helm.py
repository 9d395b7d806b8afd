"""The official Airflow chart's values: executor, image, secrets, the GPU pod template mount. Static: no engine, cluster or Docker here."""

from __future__ import annotations

from tests.infra.infra_files import (
    README,
    compose_services,
    dockerfile_vars,
    helm_values,
    locked_version,
    objects,
    variable_default,
)


def test_airflow_helm_values_name_executor_image_and_secrets() -> None:
    values = helm_values()
    executors = values["executor"].split(",")
    assert {"CeleryExecutor", "KubernetesExecutor"} <= set(executors)
    assert "CeleryKubernetesExecutor" not in executors, "CeleryKubernetesExecutor does not run on Airflow 3"
    assert values["airflowVersion"] == locked_version("apache-airflow")
    image = f"{values['images']['airflow']['repository']}:{values['images']['airflow']['tag']}"
    assert image == variable_default(compose_services()["airflow-scheduler"]["image"], "GARMENTSEG_IMAGE")
    assert image == objects("Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert values["data"]["metadataSecretName"]
    assert values["postgresql"]["enabled"] is False
    inline = {"fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey"} & set(values)
    assert not inline and not {"metadataConnection", "brokerUrl"} & set(values["data"]), (
        "secrets belong in Secrets"
    )
    assert not values["dags"]["gitSync"]["enabled"], "DAGs are baked into the image"
    assert values["config"]["core"]["dags_folder"] == dockerfile_vars("ENV")["AIRFLOW__CORE__DAGS_FOLDER"]


def test_gpu_pod_template_is_mounted_where_the_readme_says() -> None:
    values = helm_values()
    (volume,) = [
        v for v in values["volumes"] if v.get("configMap", {}).get("name") == "garmentseg-gpu-pod-template"
    ]
    (mount,) = [m for m in values["volumeMounts"] if m["name"] == volume["name"]]
    (key,) = objects("ConfigMap")["garmentseg-gpu-pod-template"]["data"]
    assert f"{mount['mountPath']}/{key}" in README.read_text()
