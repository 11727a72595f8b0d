"""Every read and write of the corrections, through SQLAlchemy: SQLite (a file, WAL) or PostgreSQL.

Calls block (they are made from worker threads: the service never runs one on its event loop).
Writes are one transaction per picture, so a killed process leaves all of a picture's digits or
none; the same picture, digit position and label twice is one row (insert-or-ignore on the
unique constraint), however many processes write at once.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url

from app.feedback import HEAD_REVISION
from app.feedback.models import corrections

DEFAULT_URL = "sqlite:///data/feedback.db"
MIGRATIONS = Path(__file__).parent / "migrations"
# Any number, the same in every process: PostgreSQL's lock that serialises concurrent migrations.
MIGRATION_LOCK = 27_0001
# How long a SQLite writer waits for another process's write to finish before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0
TABLE = corrections
UNIQUE_KEY = ("sha256", "position", "label")


class DatabaseError(Exception):
    """The database URL cannot be used; the message says why."""


@dataclass(frozen=True)
class NewCorrection:
    sha256: str
    position: int
    label: int
    read_as: int
    predicted: int | None
    weights_sha256: str
    source: str | None
    pixels: bytes  # 784 bytes, uint8 [28, 28] in MNIST form
    original: bytes | None


@dataclass(frozen=True)
class StoredDigit:
    id: int
    sha256: str
    position: int
    label: int
    pixels: bytes


def display_url(url: str | URL) -> str:
    """The URL without its password, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite files get WAL, a busy timeout and write transactions that
    take the write lock at BEGIN (so two processes never deadlock upgrading a read lock)."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseError(f"S4_DATABASE_URL {url!r} is not a database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise DatabaseError("SQLite needs a file (sqlite:///data/feedback.db), not memory")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        sa.event.listen(engine, "connect", _configure_sqlite)
        sa.event.listen(engine, "begin", _begin_immediate)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True)
    raise DatabaseError(
        f"S4_DATABASE_URL {display_url(parsed)}: only sqlite:///PATH and "
        "postgresql+psycopg://USER:PASSWORD@HOST/DB are supported"
    )


def _begin_immediate(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _configure_sqlite(dbapi_connection, _record) -> None:
    # SQLAlchemy's own BEGIN (the "begin" listener) instead of the driver's implicit one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL survives a killed process (not a power cut) and spares an fsync per write.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def schema_revision(connection: sa.Connection) -> str | None:
    """The migration the database is at (Alembic's record of it); None before the first."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def stored_digits(url: str, up_to_id: int | None = None) -> list[StoredDigit]:
    """Every digit stored at ``url`` (schema brought up to date first); DatabaseError says why
    the database cannot be read."""
    return _with_store(url, lambda store: store.digits(up_to_id))


def upgrade_schema(url: str) -> None:
    """Bring the schema at ``url`` up to date; DatabaseError says why it cannot be."""
    _with_store(url, lambda store: None)


def migrate(url: str) -> int:
    """Bring the schema at ``url`` up to date; how many corrections it holds."""
    return _with_store(url, lambda store: store.count())


def _with_store(url: str, read):
    store = FeedbackStore(url)
    try:
        store.upgrade()
        return read(store)
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(f"{display_url(url)}: {exc}") from None
    finally:
        store.close()


class FeedbackStore:
    def __init__(self, url: str):
        self.engine = create_store_engine(url)
        self.dialect = self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def upgrade(self) -> None:
        """Bring the schema to the newest migration; safe when several processes start at once
        (SQLite: the write lock taken at BEGIN; PostgreSQL: an advisory lock)."""
        with self.engine.begin() as connection:
            if self.dialect == "postgresql":
                lock = sa.text("SELECT pg_advisory_xact_lock(:key)")
                connection.execute(lock, {"key": MIGRATION_LOCK})
            if schema_revision(connection) == HEAD_REVISION:
                return
            from alembic import command
            from alembic.config import Config

            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def add(self, corrections: Sequence[NewCorrection]) -> list[tuple[int, bool]]:
        """Store one picture's digits in one transaction: (record id, whether it is new) each."""
        insert = (sqlite.insert if self.dialect == "sqlite" else postgresql.insert)(TABLE)
        insert = insert.on_conflict_do_nothing(index_elements=list(UNIQUE_KEY))
        now = datetime.now(UTC)
        results = []
        with self.engine.begin() as connection:
            for correction in corrections:
                row = asdict(correction) | {"created_at": now}
                new_id = connection.execute(insert.values(row).returning(TABLE.c.id)).scalar()
                if new_id is None:
                    existing = sa.select(TABLE.c.id).where(
                        *(TABLE.c[key] == row[key] for key in UNIQUE_KEY)
                    )
                    results.append((connection.execute(existing).scalar_one(), False))
                else:
                    results.append((new_id, True))
        return results

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(TABLE)).scalar_one()

    def stats(self) -> dict:
        """Counts only: totals, agreement per weights version, and read-vs-meant confusion."""
        agreed = sa.func.sum(sa.case((TABLE.c.read_as == TABLE.c.label, 1), else_=0))
        with self.engine.connect() as connection:
            by_weights = connection.execute(
                sa.select(TABLE.c.weights_sha256, sa.func.count(), agreed)
                .group_by(TABLE.c.weights_sha256)
                .order_by(TABLE.c.weights_sha256)
            ).all()
            pairs = connection.execute(
                sa.select(TABLE.c.label, TABLE.c.read_as, sa.func.count()).group_by(
                    TABLE.c.label, TABLE.c.read_as
                )
            ).all()
        confusion = [[0] * 10 for _ in range(10)]
        for label, read_as, count in pairs:
            confusion[label][read_as] = count
        total = sum(count for _, count, _ in by_weights)
        total_agreed = sum(int(ok or 0) for _, _, ok in by_weights)
        return {
            "corrections": total,
            "agreed": total_agreed,
            "agreement_rate": total_agreed / total if total else None,
            "by_weights": [
                {
                    "weights_sha256": sha,
                    "corrections": count,
                    "agreed": int(ok or 0),
                    "agreement_rate": int(ok or 0) / count,
                }
                for sha, count, ok in by_weights
            ],
            "confusion": confusion,
        }

    def digits(self, up_to_id: int | None = None) -> list[StoredDigit]:
        """Every stored digit (those with id <= ``up_to_id``, if given), oldest first."""
        query = sa.select(
            TABLE.c.id, TABLE.c.sha256, TABLE.c.position, TABLE.c.label, TABLE.c.pixels
        ).order_by(TABLE.c.id)
        if up_to_id is not None:
            query = query.where(TABLE.c.id <= up_to_id)
        with self.engine.connect() as connection:
            return [StoredDigit(*row) for row in connection.execute(query)]

    def delete_older_than(self, days: int) -> int:
        """Delete the records older than ``days`` days; how many went."""
        cutoff = datetime.now(UTC) - timedelta(days=days)
        with self.engine.begin() as connection:
            return connection.execute(sa.delete(TABLE).where(TABLE.c.created_at < cutoff)).rowcount
