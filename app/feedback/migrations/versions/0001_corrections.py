"""The corrections table.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("label", sa.SmallInteger(), nullable=False),
        sa.Column("read_as", sa.SmallInteger(), nullable=False),
        sa.Column("predicted", sa.SmallInteger(), nullable=True),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("pixels", sa.LargeBinary(), nullable=False),
        sa.Column("original", sa.LargeBinary(), nullable=True),
        sa.UniqueConstraint("sha256", "position", "label", name="uq_corrections_picture_label"),
    )
    op.create_index("ix_corrections_created_at", "corrections", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_corrections_created_at", table_name="corrections")
    op.drop_table("corrections")
