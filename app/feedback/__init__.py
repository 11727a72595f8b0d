"""Corrections people send (POST /feedback), kept in a database: SQLite by default, PostgreSQL by
URL. models (the table), store (every read and write), migrations (Alembic), idx (MNIST files)."""

# Set by `python -m app` for its workers once it has brought the database's schema up to date
# itself, before starting them: a worker then opens the database at its first correction, and
# one that never gets any never loads SQLAlchemy (app/api/feedback.py).
SCHEMA_UP_TO_DATE_ENV = "_S4_FEEDBACK_SCHEMA_UP_TO_DATE"
