"""app.feedback's store, migrations, split and IDX export, on SQLite and on PostgreSQL."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.feedback import sqlite_schema_is_current
from app.feedback.idx import read_idx_pair, write_idx
from app.feedback.split import digits_sha256, is_held_out, split_feedback
from app.feedback.store import (
    HEAD_REVISION,
    MIGRATIONS,
    TABLE,
    DatabaseError,
    FeedbackStore,
    NewCorrection,
)


def correction(sha256="a" * 64, position=0, label=7, read_as=1, pixels=None) -> NewCorrection:
    if pixels is None:
        pixels = np.full((28, 28), label, np.uint8).tobytes()
    return NewCorrection(sha256, position, label, read_as, None, "w" * 64, "test", pixels, None)


@pytest.fixture
def store(database_url):
    store = FeedbackStore(database_url)
    store.upgrade()
    yield store
    store.close()


def test_migrations_create_the_table_and_rerun_as_a_no_op(database_url):
    store = FeedbackStore(database_url)
    store.upgrade()
    store.upgrade()
    with store.engine.connect() as connection:
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        columns = {c["name"] for c in sa.inspect(connection).get_columns("corrections")}
    store.close()
    assert version == "0001"
    assert {"sha256", "position", "label", "read_as", "weights_sha256", "pixels"} <= columns


def test_head_revision_names_the_newest_migration():
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_the_same_picture_and_label_is_stored_once(store):
    first = store.add([correction()])
    again = store.add([correction()])
    other_label = store.add([correction(label=1)])
    assert first[0][1] and not again[0][1] and other_label[0][1]
    assert again[0][0] == first[0][0] != other_label[0][0]
    assert store.count() == 2


def test_a_number_is_stored_whole_with_one_record_per_digit(store):
    stored = store.add([correction(position=i, label=d) for i, d in enumerate([2, 0, 2, 4])])
    assert [new for _, new in stored] == [True] * 4
    digits = store.digits()
    assert [(d.position, d.label) for d in digits] == [(0, 2), (1, 0), (2, 2), (3, 4)]
    assert digits[0].pixels == np.full((28, 28), 2, np.uint8).tobytes()


def test_stats_count_agreement_per_weights_and_the_confusion(store):
    store.add([correction(sha256="a" * 64, label=7, read_as=1)])
    store.add([correction(sha256="b" * 64, label=3, read_as=3)])
    stats = store.stats()
    assert (stats["corrections"], stats["agreed"], stats["agreement_rate"]) == (2, 1, 0.5)
    assert stats["by_weights"] == [
        {"weights_sha256": "w" * 64, "corrections": 2, "agreed": 1, "agreement_rate": 0.5}
    ]
    assert stats["confusion"][7][1] == 1 and stats["confusion"][3][3] == 1
    assert sum(map(sum, stats["confusion"])) == 2


def test_retention_deletes_only_records_older_than_the_limit(store):
    store.add([correction(sha256="a" * 64)])
    store.add([correction(sha256="b" * 64)])
    with store.engine.begin() as connection:
        old = datetime.now(UTC) - timedelta(days=40)
        ages = sa.update(TABLE).where(TABLE.c.sha256 == "a" * 64).values(created_at=old)
        connection.execute(ages)
    assert store.delete_older_than(30) == 1
    assert [d.sha256 for d in store.digits()] == ["b" * 64]


def test_sqlite_runs_in_wal_mode(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path}/sub/dir/feedback.db")  # directories made
    store.upgrade()
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()


def test_only_a_sqlite_file_at_the_newest_migration_reads_as_current(tmp_path):
    url = f"sqlite:///{tmp_path}/feedback.db"
    assert not sqlite_schema_is_current(url)  # no file yet
    store = FeedbackStore(url)
    store.upgrade()
    assert sqlite_schema_is_current(url)
    assert not sqlite_schema_is_current(url + "?timeout=5")  # options: the full upgrade decides
    with store.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    store.close()
    assert not sqlite_schema_is_current(url)  # an older schema is migrated as before
    (tmp_path / "other.db").write_bytes(b"not a database")
    assert not sqlite_schema_is_current(f"sqlite:///{tmp_path}/other.db")
    assert not sqlite_schema_is_current("postgresql+psycopg://s4@127.0.0.1/s4")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://db/x", "not a url"])
def test_unusable_urls_are_refused_saying_why(url):
    with pytest.raises(DatabaseError, match=r"sqlite|postgresql|URL"):
        FeedbackStore(url)


def test_the_held_out_fifth_is_seeded_stable_and_keeps_a_picture_together(store):
    for n in range(200):
        store.add([correction(sha256=f"{n:064x}", position=i, label=i) for i in range(2)])
    digits = store.digits()
    split = split_feedback(digits, seed=0)
    assert 60 <= len(split.held_out) <= 100  # a fifth of 400, give or take
    assert len(split.train) + len(split.held_out) == 400
    held = {d.sha256 for d in split.held_out}
    assert held.isdisjoint(d.sha256 for d in split.train)
    assert split_feedback(digits, seed=0) == split  # the same seed, the same split
    assert split_feedback(digits[::-1], seed=0) == split  # whatever order they were stored in
    assert {d.sha256 for d in split_feedback(digits, seed=1).held_out} != held
    # A record added later does not move the others.
    store.add([correction(sha256="f" * 64)])
    later = split_feedback(store.digits(), seed=0)
    assert digits_sha256([d for d in later.held_out if d.id <= split.up_to_id]) == digits_sha256(
        split.held_out
    )
    assert all(is_held_out(d.sha256, 0) for d in later.held_out)


def test_export_writes_idx_files_that_mnist_readers_take(store, tmp_path):
    store.add([correction(sha256="a" * 64, label=4)])
    store.add([correction(sha256="b" * 64, label=9)])
    write_idx(tmp_path, store.digits())
    pixels, labels = read_idx_pair(tmp_path)
    assert labels.tolist() == [4, 9]
    assert (pixels[1] == 9).all() and pixels.shape == (2, 28, 28)


S4DIGITS = Path(sys.executable).with_name("s4digits")  # the installed [project.scripts] entry


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([S4DIGITS, *args], capture_output=True, text=True, timeout=120)


def test_the_cli_migrates_and_exports_from_the_database_directly(database_url, tmp_path):
    upgraded = run_cli("db", "upgrade", "--database-url", database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "schema up to date, 0 corrections" in upgraded.stdout
    store = FeedbackStore(database_url)
    store.add([correction(label=5)])
    store.close()
    exported = run_cli("feedback", "export", str(tmp_path / "out"), "--database-url", database_url)
    assert exported.returncode == 0, exported.stderr
    assert "wrote 1 digits" in exported.stdout
    assert read_idx_pair(tmp_path / "out")[1].tolist() == [5]


def test_the_cli_says_why_it_cannot_use_a_database():
    failed = run_cli("db", "upgrade", "--database-url", "mysql://nowhere/x")
    assert failed.returncode == 1
    assert "only sqlite:///PATH and postgresql+psycopg" in failed.stderr
