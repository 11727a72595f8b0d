"""The one table: a corrected digit, as the net reads it (MNIST form), with its label."""

from datetime import datetime

from sqlalchemy import DateTime, Index, LargeBinary, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Correction(Base):
    """One digit someone said the service should read as ``label``.

    ``sha256`` is of the picture's original bytes and ``position`` the digit's place in it (0 for
    a single digit; left to right in a number), so the same picture and label sent twice is one
    row (the unique constraint; writers insert-or-ignore).
    """

    __tablename__ = "corrections"
    __table_args__ = (
        UniqueConstraint("sha256", "position", "label", name="uq_corrections_picture_label"),
        Index("ix_corrections_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sha256: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(SmallInteger)
    label: Mapped[int] = mapped_column(SmallInteger)
    read_as: Mapped[int] = mapped_column(SmallInteger)  # what the served weights read
    predicted: Mapped[int | None] = mapped_column(SmallInteger)  # what the client says it was told
    weights_sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(64))
    pixels: Mapped[bytes] = mapped_column(LargeBinary)  # 784 bytes: uint8 [28, 28], MNIST form
    original: Mapped[bytes | None] = mapped_column(LargeBinary)  # S4_FEEDBACK_KEEP_ORIGINALS
