"""The one table: a corrected digit, as the net reads it (MNIST form), with its label.

One row per digit someone said the service should read as ``label``: ``sha256`` is of the
picture's original bytes and ``position`` the digit's place in it (0 for a single digit; left to
right in a number), so the same picture and label sent twice is one row (the unique constraint;
writers insert-or-ignore). SQLAlchemy Core, not the ORM: the ORM would cost every worker 6 MB.
"""

import sqlalchemy as sa

metadata = sa.MetaData()

corrections = sa.Table(
    "corrections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("position", sa.SmallInteger, nullable=False),
    sa.Column("label", sa.SmallInteger, nullable=False),
    sa.Column("read_as", sa.SmallInteger, nullable=False),  # what the served weights read
    sa.Column("predicted", sa.SmallInteger),  # what the client says it was told
    sa.Column("weights_sha256", sa.String(64), nullable=False),
    sa.Column("source", sa.String(64)),
    sa.Column("pixels", sa.LargeBinary, nullable=False),  # 784 bytes: uint8 [28, 28], MNIST form
    sa.Column("original", sa.LargeBinary),  # only with S4_FEEDBACK_KEEP_ORIGINALS
    sa.UniqueConstraint("sha256", "position", "label", name="uq_corrections_picture_label"),
    sa.Index("ix_corrections_created_at", "created_at"),
)
