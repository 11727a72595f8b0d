"""The corrections' databases the feedback tests run against: a SQLite file and a real PostgreSQL.

PostgreSQL comes from S4_TEST_POSTGRES_URL (.ci/run starts Debian's server with .ci/postgres and
sets it); each test gets a database of its own, dropped afterwards. Without a server the
PostgreSQL cases are skipped, saying why, except in CI (CI=true), where that is a failure.
"""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

BACKENDS = ["sqlite", "postgresql"]


def postgres_server_url() -> str:
    url = os.environ.get("S4_TEST_POSTGRES_URL")
    if url:
        return url
    reason = (
        "no PostgreSQL server: set S4_TEST_POSTGRES_URL, e.g. "
        "`export S4_TEST_POSTGRES_URL=$(.ci/postgres start /tmp/s4-pg)`"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI must run these tests; .ci/run starts the server)")
    pytest.skip(reason)


def fresh_database_url(backend: str, directory: Path) -> Iterator[str]:
    """A URL for an empty database of ``backend``, removed once the caller is done."""
    if backend == "sqlite":
        yield f"sqlite:///{directory}/feedback.db"
        return
    server = postgres_server_url()
    name = f"s4test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path: Path) -> Iterator[str]:
    """An empty database: SQLite, then PostgreSQL."""
    yield from fresh_database_url(request.param, tmp_path)
