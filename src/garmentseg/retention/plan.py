"""The retention plan: every collector lists what the policy lets go, then `sweep` deletes exactly that.

Lineage first: every version of every registered model names its source run and its data version (tags
`data_version` and `data_md5.<path>`, registry.register). Those runs, those data versions' objects, their
manifests and their reports are never collected. The lineage is read before anything else; if MLflow cannot
be read, nothing is collected. A collector that cannot judge its kind (the DVC remote unreachable, a data
version whose contents cannot be listed) collects nothing of that kind and says why in the plan's notes.
`gc(cfg, dry_run=True)` is the plan alone: what would go, with the reason for each item.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from garmentseg.config import Config

log = logging.getLogger(__name__)


class NoLineage(LookupError):
    """The registry names no version of the platform's model: collecting would protect nothing."""


@dataclass(frozen=True)
class Item:
    """One thing the policy lets go: its kind, what it is (a path, a run id, an object id) and why."""

    kind: str
    target: str
    reason: str
    bytes: int | None = None


@dataclass(frozen=True)
class Lineage:
    """What registered models name: their versions, source runs, data versions and DVC hashes."""

    models: tuple[str, ...] = ()
    run_ids: frozenset[str] = frozenset()
    data_versions: dict[str, frozenset[str]] = field(default_factory=dict)  # version -> data_md5.* tags

    @property
    def md5s(self) -> set[str]:
        return {md5 for md5s in self.data_versions.values() for md5 in md5s}


@dataclass
class Plan:
    lineage: Lineage
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self, *, dry_run: bool) -> dict[str, Any]:
        counts = Counter(i.kind for i in self.items)
        sizes: Counter[str] = Counter()
        for item in self.items:
            sizes[item.kind] += item.bytes or 0
        return {
            "dry_run": dry_run,
            "would_remove" if dry_run else "removed": [asdict(i) for i in self.items],
            "totals": {k: {"count": counts[k], "bytes": sizes[k]} for k in sorted(counts)},
            "protected": {
                "model_versions": list(self.lineage.models),
                "runs": sorted(self.lineage.run_ids),
                "data_versions": sorted(self.lineage.data_versions),
            },
            "notes": self.notes,
        }


def registered_lineage(cfg: Config) -> Lineage:
    """Every registered model version's lineage (all models of the registry, not only ours)."""
    from garmentseg.registry import mlflow_client

    client = mlflow_client(cfg)
    models, runs, versions = [], set(), {}
    for model in _all_pages(client.search_registered_models):
        for mv in _all_pages(client.search_model_versions, filter_string=f"name = '{model.name}'"):
            models.append(f"{mv.name} v{mv.version}")
            if mv.run_id:
                runs.add(mv.run_id)
            version = mv.tags.get("data_version", "unknown")
            md5s = frozenset(v for k, v in mv.tags.items() if k.startswith("data_md5."))
            versions[version] = versions.get(version, frozenset()) | md5s
    versions.pop("unknown", None)
    return Lineage(tuple(sorted(models)), frozenset(runs), versions)


def _all_pages(search: Any, **kwargs: Any) -> list[Any]:
    found, token = [], None
    while True:
        page = search(max_results=200, page_token=token, **kwargs)
        found.extend(page)
        token = page.token
        if not token:
            return found


def collect(cfg: Config, now: datetime | None = None) -> Plan:
    """The whole plan: lineage, then each collector (folders, MLflow runs, DVC objects)."""
    from garmentseg.retention import dvc_objects, folders, runs

    now = now or datetime.now(UTC)
    plan = Plan(registered_lineage(cfg))
    if not any(m.startswith(f"{cfg.registry.model_name} v") for m in plan.lineage.models):
        raise NoLineage(
            f"registry {cfg.tracking_uri} holds no version of model {cfg.registry.model_name!r} (a mistyped "
            "tracking URI opens an empty one): with no lineage to protect, nothing is collected"
        )
    log.info("retention: %d registered model versions protect their lineage", len(plan.lineage.models))
    for name, collector in (
        ("folders", folders.collect),
        ("MLflow runs", runs.collect),
        ("DVC", dvc_objects.collect),
    ):
        items, notes = collector(cfg, plan.lineage, now)
        log.info("retention: %s: %d items to let go", name, len(items))
        plan.items.extend(items)
        plan.notes.extend(notes)
    return plan


def sweep(cfg: Config, plan: Plan) -> None:
    """Delete the plan's items, DVC manifests before the objects they name (a manifest never outlives its
    objects)."""
    from garmentseg.retention import dvc_objects, folders, runs

    runs.sweep(cfg, [i for i in plan.items if i.kind == runs.KIND])
    dvc_objects.sweep(cfg, [i for i in plan.items if i.kind in dvc_objects.KINDS])
    folders.sweep([i for i in plan.items if i.kind in folders.KINDS])


def gc(cfg: Config, *, dry_run: bool, now: datetime | None = None) -> dict[str, Any]:
    """Collect, and unless `dry_run` sweep; the summary of what went (or would go) and what is protected."""
    plan = collect(cfg, now)
    if not dry_run:
        sweep(cfg, plan)
    summary = plan.summary(dry_run=dry_run)
    log.info(
        "retention%s: %s",
        " (dry run)" if dry_run else "",
        {k: v["count"] for k, v in summary["totals"].items()},
    )
    return summary
