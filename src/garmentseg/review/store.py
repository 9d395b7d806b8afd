"""The review queue in the platform's database: doubtful cutouts wait here for a person.

One schema for SQLite (embedded, under var/) and PostgreSQL (production), created and upgraded by the
Alembic scripts in review/migrations on every open, under a lock so several workers opening a fresh
database at once cannot race. An item is keyed by its shot's sha256: cutting out the same shot twice,
from any process, queues it once (the unique key decides, not a read-then-write). The shot and the
proposed cutout are copied into the platform's storage, so a caller emptying its folder loses nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from garmentseg.locks import exclusive

if TYPE_CHECKING:
    from garmentseg.config import Config, SourceConfig

STATES = ("pending", "retouch", "accepted", "rejected", "closed")
OPEN_STATES = ("pending", "retouch")  # waiting for a person: a decision, or a retoucher's correction
# Who rejects an open item when a newer shot under its name is queued (the studio delivered it again).
SUPERSEDED = "the platform: a newer shot under this name was queued"
DECISIONS = {"accept": "accepted", "retouch": "retouch", "reject": "rejected"}
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant the other users of a shared PostgreSQL do not take: serialises the schema upgrade.
_MIGRATION_LOCK_KEY = 0x6761726D  # "garm"
# How long a SQLite writer waits for another's lock before failing (several workers write at once).
SQLITE_BUSY_TIMEOUT_S = 60
# The largest id an item can have: SQLite's INTEGER is 64-bit, and its driver overflows on a larger number.
MAX_ITEM_ID = 2**63 - 1
MAX_NAME = 64  # characters of a reviewer's name; the column holds 128

_metadata = sa.MetaData()
items_table = sa.Table(
    "review_items",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("shot_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("file", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("estimate", sa.Float, nullable=False),
    sa.Column("needs_review", sa.Boolean, nullable=False),
    sa.Column("shot_path", sa.String(512), nullable=False),
    sa.Column("cutout_path", sa.String(512), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decided_by", sa.String(128)),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
)
cutouts_table = sa.Table(
    "cutouts",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("shot_sha256", sa.String(64), nullable=False),
    sa.Column("file", sa.String(128), nullable=False),
    sa.Column("estimate", sa.Float, nullable=False),
    sa.Column("needs_review", sa.Boolean, nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class ReviewItem:
    """One queued cutout: what it is, how good the model thinks it is, and what a person decided."""

    id: int
    file: str  # <garment>_<View>, the data contract's name without .png
    state: str
    estimate: float
    needs_review: bool
    shot_path: Path  # the platform's copy of the shot
    cutout_path: Path  # the platform's copy of the proposed cutout (RGBA PNG)
    model_version: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    source: str  # what made the cutout: predict, service, the weekly job


def reviewer_name(raw: str) -> str:
    """A name as it will be recorded on decisions: trimmed, 1-64 printable characters (one rule for the page
    and the CLI, so a name a reviewer signs in with can always be recorded, and a recorded one shown)."""
    name = " ".join(raw.split())
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise ValueError(f"name {raw!r}: give 1-{MAX_NAME} printable characters")
    return name


def sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def make_engine(url: str) -> sa.Engine:
    """An engine for the queue; SQLite gets WAL and a long busy timeout so concurrent writers wait."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    return engine


def migrate(engine: sa.Engine) -> None:
    """Bring the queue's schema to the newest migration (a no-op when it is there already). Writers that
    open the queue together migrate one at a time, each seeing the one before it committed: PostgreSQL
    under a transaction-scoped advisory lock, SQLite under a file lock beside the database taken before
    the transaction starts and released after it commits."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    alembic_cfg = AlembicConfig()
    alembic_cfg.set_main_option("script_location", str(MIGRATIONS))
    database = engine.url.database or ""
    on_file = engine.dialect.name == "sqlite" and database not in ("", ":memory:")
    with exclusive(Path(f"{database}.migrate.lock")) if on_file else nullcontext(), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        alembic_cfg.attributes["connection"] = conn
        command.upgrade(alembic_cfg, "head")


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy src to dest through a temporary name, so a reader never sees half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time here is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def source_shot_problem(rules: SourceConfig, view: str, width: int, height: int) -> str | None:
    """Why a shot of this view and size could never enter a batch from a source with these rules (the GX
    suite's resolution and view rules, read off one shot), or None; a rule the source only warns on
    refuses nothing."""
    if view not in rules.views and "file_name" not in rules.warn_only:
        return f"view {view} is not one of {', '.join(rules.views)}"
    size = f"{width}x{height}"
    if "resolution" in rules.warn_only:
        return None
    if rules.exact_size:
        w, h = rules.exact_size
        return None if (width, height) == (w, h) else f"{size}, expected {w}x{h}"
    wide, high = (rules.min_width, rules.max_width), (rules.min_height, rules.max_height)
    if not (wide[0] <= width <= wide[1] and high[0] <= height <= high[1]):  # type: ignore[operator]
        return f"{size}, expected {wide[0]}..{wide[1]} x {high[0]}..{high[1]}"
    if rules.aspect is not None and abs(width / height - rules.aspect) > rules.aspect_tolerance:
        return f"{size}: aspect {width / height:.3f}, expected {rules.aspect:g} ± {rules.aspect_tolerance:g}"
    return None


class ReviewQueue:
    """The queue of doubtful cutouts, over any SQLAlchemy database, with its files under `storage_dir`."""

    def __init__(
        self, engine: sa.Engine, storage_dir: Path, source: tuple[str, SourceConfig] | None = None
    ) -> None:
        self.engine = engine
        self.storage_dir = Path(storage_dir)
        self.source = source  # (name, rules) of the batches corrections come back as; None: no rule

    def shot_problem(self, file: str, width: int, height: int) -> str | None:
        """Why a shot could not be queued: its correction would come back as a batch the source's rules
        refuse (another size, a view it does not take), so a retoucher's work could never enter."""
        if self.source is None:
            return None
        name, rules = self.source
        view = file.rpartition("_")[2]
        if problem := source_shot_problem(rules, view, width, height):
            return f"{problem} (source {name}): a correction of it could not enter the dataset"
        return None

    @property
    def location(self) -> str:
        """The database URL with any password hidden, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    @classmethod
    def from_config(cls, cfg: Config) -> ReviewQueue:
        """The configured queue (`review.database`, `review.storage_dir`), migrated on open."""
        engine = make_engine(cfg.review_database)
        migrate(engine)
        return cls(engine, cfg.path(cfg.review.storage_dir), (cfg.data.source, cfg.source))

    def record_cutout(
        self,
        *,
        file: str,
        shot: Path,
        cutout: Path,
        estimate: float,
        needs_review: bool,
        model_version: str,
        source: str,
    ) -> ReviewItem | None:
        """Log a cutout the platform made, with its estimate, and queue it when it is doubtful: the queue's
        item for this shot, or None for a cutout that needs no review."""
        shot_sha = sha256_file(shot)
        with self.engine.begin() as conn:
            conn.execute(
                cutouts_table.insert().values(
                    shot_sha256=shot_sha,
                    file=file,
                    estimate=float(estimate),
                    needs_review=bool(needs_review),
                    model_version=str(model_version),
                    source=source,
                    made_at=datetime.now(UTC),
                )
            )
        if not needs_review:
            return None
        return self.record(
            file=file,
            shot=shot,
            cutout=cutout,
            estimate=estimate,
            model_version=model_version,
            source=source,
            shot_sha256=shot_sha,
        )

    def record(
        self,
        *,
        file: str,
        shot: Path,
        cutout: Path,
        estimate: float,
        model_version: str,
        source: str,
        shot_sha256: str | None = None,
    ) -> ReviewItem:
        """Queue a cutout as `pending`, the shot and the cutout copied into the platform's storage: the
        queue's item for this shot (the existing one when the same shot was queued before). `shot_sha256`:
        the shot's hash when the caller has read it already."""
        shot_sha = shot_sha256 or sha256_file(shot)
        folder = Path(shot_sha[:2]) / shot_sha
        shot_rel = folder / f"shot{shot.suffix.lower()}"
        if not (self.storage_dir / shot_rel).is_file():
            _copy_atomic(shot, self.storage_dir / shot_rel)
        cutout_rel = self._keep_cutout(folder, cutout)
        row = {
            "shot_sha256": shot_sha,
            "file": file,
            "state": "pending",
            "estimate": float(estimate),
            "needs_review": True,
            "shot_path": shot_rel.as_posix(),
            "cutout_path": cutout_rel.as_posix(),
            "model_version": str(model_version),
            "source": source,
            "created_at": datetime.now(UTC),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(items_table.insert().values(**row))
                # the shot delivered again (fixed, re-shot): nobody should retouch the old one any more
                conn.execute(
                    items_table.update()
                    .where(
                        items_table.c.file == file,
                        items_table.c.state.in_(OPEN_STATES),
                        items_table.c.shot_sha256 != shot_sha,
                    )
                    .values(state="rejected", decided_by=SUPERSEDED, decided_at=datetime.now(UTC))
                )
        except sa.exc.IntegrityError:  # queued before, by this process or another: keep the first
            if not self._cutout_in_use(cutout_rel):
                (self.storage_dir / cutout_rel).unlink(missing_ok=True)
        with self.engine.connect() as conn:
            found = conn.execute(items_table.select().where(items_table.c.shot_sha256 == shot_sha)).one()
        return self._item(found)

    def cutout_stats(self) -> list[dict[str, Any]]:
        """Per model version and source: how many cutouts were made, how many were doubtful, the mean and
        lowest estimate, and when the first and last were made; newest first."""
        c = cutouts_table.c
        query = (
            sa.select(
                c.model_version,
                c.source,
                sa.func.count().label("cutouts"),
                sa.func.sum(sa.case((c.needs_review, 1), else_=0)).label("doubtful"),
                sa.func.avg(c.estimate).label("mean_estimate"),
                sa.func.min(c.estimate).label("lowest_estimate"),
                sa.func.min(c.made_at).label("first"),
                sa.func.max(c.made_at).label("last"),
            )
            .group_by(c.model_version, c.source)
            .order_by(sa.func.max(c.made_at).desc())
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {
                "model_version": row.model_version,
                "source": row.source,
                "cutouts": row.cutouts,
                "doubtful": int(row.doubtful),
                "doubtful_share": int(row.doubtful) / row.cutouts,
                "mean_estimate": float(row.mean_estimate),
                "lowest_estimate": float(row.lowest_estimate),
                "first": _aware(row.first).isoformat(),
                "last": _aware(row.last).isoformat(),
            }
            for row in rows
        ]

    def _keep_cutout(self, folder: Path, cutout: Path) -> Path:
        """Copy a cutout into an item's storage folder, named by its own hash (a second model's cutout of the
        same shot never overwrites the queued one); its path relative to the storage."""
        cutout_rel = folder / f"cutout-{sha256_file(cutout)[:16]}.png"
        _copy_atomic(cutout, self.storage_dir / cutout_rel)
        return cutout_rel

    def _cutout_in_use(self, cutout_rel: Path) -> bool:
        with self.engine.connect() as conn:
            used = conn.execute(
                sa.select(sa.func.count())
                .select_from(items_table)
                .where(items_table.c.cutout_path == cutout_rel.as_posix())
            ).scalar_one()
        return bool(used)

    def items(self, states: Iterable[str] | None = None) -> list[ReviewItem]:
        """The items in these states (all when None), worst estimate first."""
        query = items_table.select().order_by(items_table.c.estimate, items_table.c.id)
        if states is not None:
            wanted = list(states)
            unknown = sorted(set(wanted) - set(STATES))
            if unknown:
                raise ValueError(f"unknown review states {unknown}; states are {', '.join(STATES)}")
            query = query.where(items_table.c.state.in_(wanted))
        with self.engine.connect() as conn:
            return [self._item(row) for row in conn.execute(query)]

    def get(self, item_id: int) -> ReviewItem:
        """The item with this id; KeyError naming the id when there is none."""
        row = None
        if 0 < item_id <= MAX_ITEM_ID:  # ids count up from 1; no item has one the database cannot hold
            with self.engine.connect() as conn:
                row = conn.execute(items_table.select().where(items_table.c.id == item_id)).one_or_none()
        if row is None:
            raise KeyError(f"review item {item_id} does not exist")
        return self._item(row)

    def decide(self, item_id: int, decision: str, by: str) -> ReviewItem:
        """A person's decision (accept | retouch | reject) on an item not yet closed; a later decision
        replaces an earlier one until the item is closed."""
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
        name = reviewer_name(by)
        changed = 0
        if 0 < item_id <= MAX_ITEM_ID:  # beyond it no item exists, and get() below says so
            with self.engine.begin() as conn:
                changed = conn.execute(
                    items_table.update()
                    .where(items_table.c.id == item_id, items_table.c.state != "closed")
                    .values(state=DECISIONS[decision], decided_by=name, decided_at=datetime.now(UTC))
                ).rowcount
        if not changed:
            item = self.get(item_id)  # KeyError when absent
            raise ValueError(f"review item {item_id} ({item.file}) is closed; it takes no more decisions")
        return self.get(item_id)

    def send_back(self, item_id: int, cutout: Path, by: str, *, source: str, estimate: float) -> ReviewItem:
        """Send an item to retouch with `cutout` as the one to fix, whatever its state, closed included: a
        label confirmed wrong by the audit after an earlier correction of the same shot went in. `source`
        and `estimate` become the sender's (the label audit's: a label known wrong sorts first)."""
        folder = self.get(item_id).shot_path.parent.relative_to(self.storage_dir)  # the item's own folder
        cutout_rel = self._keep_cutout(folder, cutout)
        with self.engine.begin() as conn:
            conn.execute(
                items_table.update()
                .where(items_table.c.id == item_id)
                .values(
                    state="retouch",
                    cutout_path=cutout_rel.as_posix(),
                    source=source,
                    estimate=float(estimate),
                    decided_by=reviewer_name(by),
                    decided_at=datetime.now(UTC),
                    closed_at=None,
                )
            )
        return self.get(item_id)

    def close(self, item_ids: Iterable[int], by: str) -> None:
        """Close items whose correction is in the dataset; an undecided one is recorded as decided by `by`."""
        ids = list(item_ids)
        if not ids:
            return
        now = datetime.now(UTC)
        open_items = items_table.c.id.in_(ids) & (items_table.c.state != "closed")
        with self.engine.begin() as conn:
            conn.execute(
                items_table.update()
                .where(open_items & (items_table.c.state == "pending"))
                .values(decided_by=by, decided_at=now)
            )
            conn.execute(items_table.update().where(open_items).values(state="closed", closed_at=now))

    def _item(self, row: sa.Row) -> ReviewItem:
        return ReviewItem(
            id=row.id,
            file=row.file,
            state=row.state,
            estimate=row.estimate,
            needs_review=row.needs_review,
            shot_path=self.storage_dir / row.shot_path,
            cutout_path=self.storage_dir / row.cutout_path,
            model_version=row.model_version,
            created_at=_aware(row.created_at),
            decided_by=row.decided_by,
            decided_at=_aware(row.decided_at),
            source=row.source,
        )
