"""DVC's object store, used as a library: hash data paths into the cache, push and fetch their objects,
check them out, and keep data-version manifests beside the objects in the remote.

The remote is `paths.dvc_remote` (a path, taken from the project root, or a URL such as s3://bucket/prefix),
written to `.dvc/config.local` as the default remote `storage` on every use, so it never lands in a
tracked file and `GARMENTSEG__PATHS__DVC_REMOTE` overrides it. For S3 the endpoint comes from
$GARMENTSEG_S3_ENDPOINT_URL (else $AWS_ENDPOINT_URL) and the credentials from the usual AWS variables,
which boto reads itself; none of them is ever written.

A manifest is `<remote>/garmentseg/versions/<data_version>.json`: every path of that data version, relative
to the data dir, with DVC's md5 (`.dir` for a folder), size and file count. Objects are pushed before the
manifest is written, so a manifest in the remote means its objects are there too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from garmentseg.config import Config
from garmentseg.data.versioning import DvcError, dvc

log = logging.getLogger(__name__)

REMOTE_NAME = "storage"
MANIFEST_DIR = ("garmentseg", "versions")
ENDPOINT_ENV = ("GARMENTSEG_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")


class StoreError(DvcError):
    """DVC's store cannot do what was asked; the message names the remote or project and the reason."""


@dataclass(frozen=True)
class Entry:
    """DVC's record of one data path: md5 (ending in .dir for a folder), bytes and, for a folder, files."""

    md5: str
    size: int
    nfiles: int | None = None

    def pointer(self, name: str) -> dict[str, Any]:
        """The body of a `<name>.dvc` file for this entry, as `dvc add` writes it."""
        out: dict[str, Any] = {"md5": self.md5, "size": self.size}
        if self.nfiles is not None:
            out["nfiles"] = self.nfiles
        return {"outs": [{**out, "hash": "md5", "path": name}]}


def remote_url(cfg: Config) -> str:
    """paths.dvc_remote as DVC takes it: a URL unchanged, a path made absolute from the project root."""
    value = str(cfg.paths.dvc_remote)
    return value if "://" in value else str(cfg.path(value))


def set_remote(root: Path, url: str) -> None:
    """Make URL (and an S3 endpoint from the environment) the default remote in root's .dvc/config.local."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    section: dict[str, str] = {"url": url}
    endpoint = next((os.environ[k] for k in ENDPOINT_ENV if os.environ.get(k)), None)
    if endpoint and url.startswith("s3://"):
        section["endpointurl"] = endpoint
    try:
        with Repo(str(root)) as repo, repo.config.edit("local") as conf:
            if (
                dict(conf["remote"].get(REMOTE_NAME, {})) != section
                or conf["core"].get("remote") != REMOTE_NAME
            ):
                conf["remote"][REMOTE_NAME] = section
                conf["core"]["remote"] = REMOTE_NAME
    except DvcException as exc:
        raise StoreError(f"DVC in {root}: {exc}") from exc


def configure_remote(cfg: Config) -> str:
    """paths.dvc_remote as this project's default DVC remote (in .dvc/config.local); return its URL."""
    url = remote_url(cfg)
    set_remote(cfg.root, url)
    return url


@contextmanager
def _repo(cfg: Config) -> Iterator[Any]:
    """The project's DVC repo, its exceptions turned into StoreError naming the project."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(cfg.root)) as repo:
            yield repo
    except DvcException as exc:
        raise StoreError(f"DVC in {cfg.root}: {exc}") from exc


def _build(repo: Any, path: Path) -> tuple[Any, Any, Entry]:
    from dvc_data.hashfile.build import build

    staging, meta, obj = build(repo.cache.local, str(path), repo.fs, "md5", ignore=repo.dvcignore)
    return staging, obj, Entry(obj.hash_info.value, int(meta.size), meta.nfiles if meta.isdir else None)


def describe(cfg: Config, paths: dict[str, Path]) -> dict[str, Entry]:
    """DVC's entry for each path (name -> path), as `dvc add` would compute it; nothing is written."""
    with _repo(cfg) as repo:
        return {name: _build(repo, path)[2] for name, path in paths.items()}


def commit(cfg: Config, paths: dict[str, Path]) -> dict[str, Entry]:
    """Save each path's objects in the local DVC cache; return their entries."""
    from dvc_data.hashfile.transfer import transfer

    entries = {}
    with _repo(cfg) as repo:
        for name, path in paths.items():
            staging, obj, entries[name] = _build(repo, path)
            transfer(staging, repo.cache.local, {obj.hash_info}, shallow=False, hardlink=False)
    return entries


def _object_ids(repo: Any, entries: dict[str, Entry]) -> set[Any]:
    """Every object the entries consist of: each file, each folder's listing and the files it lists."""
    from dvc_data.hashfile import load
    from dvc_data.hashfile.hash_info import HashInfo

    ids = set()
    for entry in entries.values():
        info = HashInfo("md5", entry.md5)
        ids.add(info)
        if info.isdir:
            ids.update(oid for _, _, oid in load(repo.cache.local, info))
    return ids


@contextmanager
def _talking_to(url: str) -> Iterator[None]:
    """Any failure of the remote's filesystem (OSError, botocore's errors, ...) as a StoreError naming it."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:  # whatever the fs backend raises: the remote is named with it
        raise StoreError(f"DVC remote {url} is unreachable or refused: {type(exc).__name__}: {exc}") from exc


def _remote(repo: Any, url: str) -> Any:
    from dvc.exceptions import DvcException

    try:
        return repo.cloud.get_remote(REMOTE_NAME)
    except DvcException as exc:
        raise StoreError(f"DVC remote {url}: {exc}") from exc


def _manifest_path(remote: Any, version: str) -> str:
    return remote.fs.join(remote.path, *MANIFEST_DIR, f"{version}.json")


def push(cfg: Config, version: str, entries: dict[str, Entry]) -> bool:
    """Push the entries' objects, then write the version's manifest; True when anything was uploaded.
    A remote that already names this version with other content is refused."""
    url = configure_remote(cfg)
    with _repo(cfg) as repo:
        remote = _remote(repo, url)
        with _talking_to(url):
            done = repo.cloud.push(_object_ids(repo, entries), remote=REMOTE_NAME)
            existing = _read(remote, version)
            if done.failed:
                raise StoreError(f"DVC remote {url}: {len(done.failed)} objects were not uploaded")
            if existing is None:
                remote.fs.makedirs(remote.fs.join(remote.path, *MANIFEST_DIR), exist_ok=True)
                body = {"data_version": version, "paths": {k: asdict(v) for k, v in sorted(entries.items())}}
                remote.fs.pipe_file(_manifest_path(remote, version), json.dumps(body, indent=1).encode())
            elif existing != entries:
                differs = sorted(
                    k for k in existing.keys() | entries.keys() if existing.get(k) != entries.get(k)
                )
                raise StoreError(
                    f"DVC remote {url}: data version {version} is already there with other content "
                    f"({', '.join(differs[:3])}): another node published these labels first; "
                    f"`garmentseg data checkout {version}` takes its copy"
                )
    return bool(done.transferred) or existing is None


def _read(remote: Any, version: str) -> dict[str, Entry] | None:
    path = _manifest_path(remote, version)
    if not remote.fs.exists(path):
        return None
    body = json.loads(remote.fs.cat_file(path))
    return {name: Entry(**fields) for name, fields in body["paths"].items()}


def manifest(cfg: Config, version: str) -> dict[str, Entry] | None:
    """The manifest of a data version in the remote, or None when the remote does not hold it."""
    url = configure_remote(cfg)
    with _repo(cfg) as repo, _talking_to(url):
        return _read(_remote(repo, url), version)


def fetch_and_checkout(cfg: Config, entries: dict[str, Entry], paths: dict[str, Path]) -> None:
    """Fetch the entries' objects from the remote into the cache and write them at their paths."""
    from dvc_data.hashfile import load
    from dvc_data.hashfile.checkout import checkout
    from dvc_data.hashfile.hash_info import HashInfo

    url = configure_remote(cfg)
    with _repo(cfg) as repo:
        _remote(repo, url)
        listings = {HashInfo("md5", e.md5) for e in entries.values()}
        with _talking_to(url):
            failed = repo.cloud.pull(listings, remote=REMOTE_NAME).failed
            failed |= repo.cloud.pull(_object_ids(repo, entries) - listings, remote=REMOTE_NAME).failed
        if failed:
            names = sorted(h.value for h in failed)
            raise StoreError(f"DVC remote {url}: {len(names)} objects are missing ({', '.join(names[:3])})")
        for name, entry in entries.items():
            obj = load(repo.cache.local, HashInfo("md5", entry.md5))
            checkout(str(paths[name]), repo.fs, obj, repo.cache.local, force=True, state=repo.state)


def write_pointer(path: Path, entry: Entry) -> bool:
    """Write `<path>.dvc` (and the folder's .gitignore line) as `dvc add` would; True when it changed."""
    pointer = path.with_name(f"{path.name}.dvc")
    text = yaml.safe_dump(entry.pointer(path.name), sort_keys=False)
    ignore = path.parent / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    if f"/{path.name}" not in lines:
        ignore.write_text("\n".join([*lines, f"/{path.name}"]) + "\n")
    if pointer.is_file() and pointer.read_text() == text:
        return False
    pointer.write_text(text)
    return True


def record_stage(cfg: Config, stage: str) -> bool:
    """`dvc commit --force STAGE` so dvc.lock records its current deps and outs; True when dvc.lock changed."""
    lock = cfg.root / "dvc.lock"
    before = lock.read_text() if lock.is_file() else None
    dvc(["commit", "--force", stage], cfg.root)  # the CLI: DVC resolves a stage's paths from the cwd
    return (lock.read_text() if lock.is_file() else None) != before


@contextmanager
def stores(cfg: Config) -> Iterator[tuple[Any, Any]]:
    """(the project's DVC repo, its default remote) for a collector walking the cache and the remote
    (retention); any failure of either is a StoreError naming it."""
    url = configure_remote(cfg)
    with _repo(cfg) as repo, _talking_to(url):
        yield repo, _remote(repo, url)


def manifest_path(remote: Any, version: str) -> str:
    return _manifest_path(remote, version)


def read_manifest(remote: Any, version: str) -> dict[str, Entry] | None:
    """`manifest` inside `stores`: the version's entries in that remote, or None."""
    return _read(remote, version)
