"""DVC objects no protected data version needs, in the local cache and in the remote, and the manifests of
the versions that are no longer kept.

Kept: every object of the data versions registered models name (their manifests, plus the `data_md5.*`
hashes on each model version), of the data version this tree holds, and of what this git revision's DVC
files reference (what `dvc gc --workspace` keeps), each folder's listing expanded to its files. `dvc gc`
alone keeps by git revision; the platform versions data by manifest, so the collector keeps by data
version. A kept folder whose listing is in neither store means its files cannot be told apart: then no
object is collected. The sweep runs under the dataset lock, removes manifests first, and spares any object
a manifest still in the remote names (a version published since the plan was made).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from garmentseg.retention.plan import Item, Lineage

if TYPE_CHECKING:
    from garmentseg.config import Config

log = logging.getLogger(__name__)

MANIFEST, REMOTE, CACHE = "dvc-manifest", "dvc-remote-object", "dvc-cache-object"
KINDS = (MANIFEST, REMOTE, CACHE)


class UnknownContents(LookupError):
    """A kept folder's listing is in neither the cache nor the remote."""


def _expand(md5s: set[str], odbs: list[Any]) -> set[str]:
    """The md5s and, for each folder (.dir), every file it lists, read from the first store holding it."""
    from dvc_data.hashfile import load
    from dvc_data.hashfile.hash_info import HashInfo

    kept = set(md5s)
    for md5 in (m for m in md5s if m.endswith(".dir")):
        for odb in odbs:
            if odb.exists(md5):
                kept.update(oid.value for _, _, oid in load(odb, HashInfo("md5", md5)))
                break
        else:
            raise UnknownContents(f"folder object {md5} is in neither the cache nor the remote")
    return kept


def _manifest_versions(remote: Any) -> dict[str, str]:
    """version -> manifest path of every manifest in the remote."""
    from garmentseg.data import store

    folder = remote.fs.join(remote.path, *store.MANIFEST_DIR)
    if not remote.fs.exists(folder):
        return {}
    paths = [p for p in remote.fs.find(folder) if p.endswith(".json")]
    return {remote.fs.name(p)[: -len(".json")]: p for p in paths}


def _listing(odb: Any, now: datetime) -> dict[str, tuple[int, float]]:
    """oid -> (bytes, age in days) of every object in a store (one listing, sizes and times included)."""
    if not odb.fs.exists(odb.path):
        return {}
    found = odb.fs.fs.find(odb.path, detail=True)  # fsspec (S3...): sizes come with the one listing
    if not isinstance(found, dict):  # DVC's local filesystem lists paths only; a stat each is cheap there
        found = {path: odb.fs.info(path) for path in found}
    return {
        odb.path_to_oid(path): (int(info.get("size") or 0), _age(info, now)) for path, info in found.items()
    }


def _workspace_md5s(repo: Any) -> set[str]:
    """What this git revision's DVC files (dvc.lock, *.dvc) reference."""
    return {h.value for objs in repo.used_objs(force=True).values() for h in objs}


def _age(info: dict[str, Any], now: datetime) -> float:
    """Days since a listed file was written, from its store's own time (0 when the store does not say:
    kept, on the safe side)."""
    stamp = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if stamp is None:
        return 0.0
    if not isinstance(stamp, datetime):
        stamp = datetime.fromtimestamp(float(stamp), UTC)
    return (now - (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC))).total_seconds() / 86400


def _kept_md5s(
    cfg: Config, repo: Any, remote: Any, lineage: Lineage, recent: set[str]
) -> tuple[set[str], set[str]]:
    """(kept data versions, their md5s before expansion); raises UnknownContents for a version it cannot list.
    `recent`: versions published within `retention.data_version_days`, which another node may have just
    pushed or be training on; no registry or tree here can know of them yet."""
    from garmentseg.data import plane, store, versioning

    current = versioning.data_version(cfg)
    # a model trained on a folder outside the dataset names "index:<hash>": nothing in DVC to keep for it
    versions = {v for v in lineage.data_versions if not v.startswith("index:")} | ({current} - {"empty"})
    versions |= recent
    md5s = set(lineage.md5s) | _workspace_md5s(repo)
    for version in sorted(versions):
        entries = store.read_manifest(remote, version)
        if entries is not None:
            md5s.update(e.md5 for e in entries.values())
        elif version != current and not lineage.data_versions.get(version):
            raise UnknownContents(f"registered data version {version} has no manifest and no data_md5 tags")
    if current != "empty":
        held = {n: p for n, p in plane.dataset_paths(cfg).items() if p.exists()}
        md5s.update(e.md5 for e in store.describe(cfg, held).values())
    return versions, md5s


def collect(cfg: Config, lineage: Lineage, now: datetime) -> tuple[list[Item], list[str]]:
    from garmentseg.data import store

    days = cfg.retention.data_version_days
    try:
        with store.stores(cfg) as (repo, remote):
            manifests = _manifest_versions(remote)
            recent = {v for v, path in manifests.items() if _age(remote.fs.info(path), now) < days}
            versions, md5s = _kept_md5s(cfg, repo, remote, lineage, recent)
            kept = _expand(md5s, [repo.cache.local, remote.odb])
            items = [
                Item(
                    MANIFEST,
                    path,
                    f"data version {v}: no registered model names it, not the tree's, published over "
                    f"{days:g} days ago",
                )
                for v, path in sorted(manifests.items())
                if v not in versions
            ]
            for kind, odb in ((REMOTE, remote.odb), (CACHE, repo.cache.local)):
                # an object younger than a version's grace may be a publish under way, its manifest to come
                reason = f"in no kept data version, nor this revision's DVC files; over {days:g} days old"
                listed = sorted(_listing(odb, now).items())
                items += [Item(kind, o, reason, n) for o, (n, age) in listed if o not in kept and age >= days]
    except (store.StoreError, UnknownContents) as exc:
        return [], [f"DVC objects kept: {exc}"]
    return items, []


def sweep(cfg: Config, items: list[Item]) -> None:
    from garmentseg.data import plane, store

    if not items:
        return
    with plane.dataset_lock(cfg), store.stores(cfg) as (repo, remote):
        for item in (i for i in items if i.kind == MANIFEST):
            remote.fs.rm_file(item.target)
        named = set()
        for version in _manifest_versions(remote):  # what is left, including versions published since
            named.update(e.md5 for e in (store.read_manifest(remote, version) or {}).values())
        spared = _expand(named, [repo.cache.local, remote.odb])
        for kind, odb in ((REMOTE, remote.odb), (CACHE, repo.cache.local)):
            for item in (i for i in items if i.kind == kind and i.target not in spared):
                odb.delete(item.target)
        log.info("removed %d DVC objects and manifests", sum(i.target not in spared for i in items))
