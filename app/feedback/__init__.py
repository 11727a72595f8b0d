"""Corrections people send (POST /feedback), kept in a database: SQLite by default, PostgreSQL by
URL. models (the table), store (every read and write), migrations (Alembic), idx (MNIST files)."""

import os
import sqlite3

# Set by `python -m app` for its workers once it has brought the database's schema up to date
# itself, before starting them: a worker then opens the database at its first correction, and
# one that never gets any never loads SQLAlchemy (app/api/feedback.py).
SCHEMA_UP_TO_DATE_ENV = "_S4_FEEDBACK_SCHEMA_UP_TO_DATE"

# The newest migration in migrations/versions/: a database already there needs no Alembic.
HEAD_REVISION = "0001"

SQLITE_PREFIX = "sqlite:///"


def sqlite_schema_is_current(database_url: str) -> bool:
    """Whether ``database_url`` is a SQLite file, writable, whose schema is at HEAD_REVISION.

    Read with the standard library's sqlite3, so `python -m app` restarting on an up-to-date
    database does not import SQLAlchemy and Alembic first (docs/decisions.md). False on any doubt
    (PostgreSQL, a URL with options or escapes, a new or unreadable file, another revision):
    the caller then runs the full upgrade, which also says what is wrong.
    """
    if not database_url.startswith(SQLITE_PREFIX):
        return False
    path = database_url.removeprefix(SQLITE_PREFIX)
    if not path or any(character in path for character in "?%#") or path == ":memory:":
        return False
    folder = os.path.dirname(path) or "."
    if not (os.path.isfile(path) and os.access(path, os.W_OK) and os.access(folder, os.W_OK)):
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == HEAD_REVISION
