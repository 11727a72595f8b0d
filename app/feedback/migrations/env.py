"""Alembic's environment: migrations run on the connection the caller hands over
(``app.feedback.store.upgrade``), in its transaction."""

from alembic import context

from app.feedback.models import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
