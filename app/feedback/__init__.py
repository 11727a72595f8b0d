"""Corrections people send (POST /feedback), kept in a database: SQLite by default, PostgreSQL by
URL. models (the table), store (every read and write), migrations (Alembic), idx (MNIST files)."""
