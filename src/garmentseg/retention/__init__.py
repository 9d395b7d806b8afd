"""Retention: what the platform may forget, per `retention:` in params.yaml, never what a registered model's
lineage names (see `plan`)."""
