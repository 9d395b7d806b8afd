#!/usr/bin/env bash
# First start of an empty PostgreSQL data directory (docker-entrypoint-initdb.d): one role and one database
# for the Airflow metadata DB and one for the MLflow registry, plus the MLflow auth database. Passwords come from the environment
# (AIRFLOW_DB_PASSWORD, MLFLOW_DB_PASSWORD) and reach SQL as psql variables, never as pasted text.
# Shared by infra/compose (bind mount) and infra/k8s (kustomize configMapGenerator).
set -euo pipefail

create_role_and_db() {
  local name=$1 password=$2
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v name="$name" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
SQL
}

create_role_and_db airflow "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is required}"
create_role_and_db mlflow "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is required}"
# MLflow's basic-auth users and permissions, beside the registry and owned by the same role.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -c 'CREATE DATABASE mlflow_auth OWNER mlflow;'

