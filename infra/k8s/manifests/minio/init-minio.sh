#!/bin/sh
# One-shot, safe to re-run (compose `minio-init`, the Kubernetes Job `minio-init`): the platform's buckets,
# and its own S3 user with a policy that reaches those buckets only. MinIO's root account does this and
# nothing else. Credentials come from the environment, never from a file:
#   MINIO_ROOT_USER, MINIO_ROOT_PASSWORD           the root account (MinIO's own variables)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY       the platform's user, as every S3 client reads it
# Shared by infra/compose (bind mount) and infra/k8s (kustomize configMapGenerator), beside the policy.
set -eu
here=$(dirname "$0")
mc alias set local "${MINIO_URL:-http://minio:9000}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
# MLflow's proxied artifacts (MLFLOW_ARTIFACTS_DESTINATION) and the DVC remote (GARMENTSEG__PATHS__DVC_REMOTE)
mc mb --ignore-existing local/garmentseg-mlflow local/garmentseg-dvc
mc admin policy create local garmentseg-platform "$here/platform-policy.json"
mc admin user add local "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}"
mc admin user info local "$AWS_ACCESS_KEY_ID" | grep -q garmentseg-platform \
  || mc admin policy attach local garmentseg-platform --user "$AWS_ACCESS_KEY_ID"
