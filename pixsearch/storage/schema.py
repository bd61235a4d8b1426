"""SQLAlchemy 2.0 typed models: the metadata of a library.

Vectors live here too (`Embedding.vector`, float32 bytes), so a FAISS index can always be
rebuilt from the database without re-embedding. The FAISS id of a vector is its row id.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 4


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key-value facts about the library: schema version, active model, index generation."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ImageRow(Base):
    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    camera: Mapped[str | None] = mapped_column(String(200), nullable=True)
    indexed_at: Mapped[datetime] = mapped_column(DateTime)
    embeddings: Mapped[list[Embedding]] = relationship(back_populates="image", cascade="all, delete-orphan")


class Embedding(Base):
    """One vector of one image (or text) under one model; row id == FAISS id."""

    __tablename__ = "embeddings"
    __table_args__ = (UniqueConstraint("image_id", "model_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    model_key: Mapped[str] = mapped_column(String(32), index=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    image: Mapped[ImageRow] = relationship(back_populates="embeddings")


class ModelRow(Base):
    """A (model spec, preprocessing) pair vectors were made with; `key` names its index files."""

    __tablename__ = "models"
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    spec: Mapped[str] = mapped_column(Text)
    preprocess_id: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)


class SkippedFile(Base):
    """A file the indexer could not use, with the reason; cleared when the file later indexes."""

    __tablename__ = "skipped"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    reason: Mapped[str] = mapped_column(Text)
    seen_at: Mapped[datetime] = mapped_column(DateTime)


class TextRow(Base):
    """A text of a text collection (for image->text lookups)."""

    __tablename__ = "texts"
    __table_args__ = (UniqueConstraint("collection", "text"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection: Mapped[str] = mapped_column(String(200), index=True)
    text: Mapped[str] = mapped_column(Text)


class TextEmbedding(Base):
    __tablename__ = "text_embeddings"
    __table_args__ = (UniqueConstraint("text_id", "model_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text_id: Mapped[int] = mapped_column(ForeignKey("texts.id", ondelete="CASCADE"), index=True)
    model_key: Mapped[str] = mapped_column(String(32), index=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class TagRow(Base):
    """A tag on an image. `state` is 'suggested' (by a model), 'confirmed' (by a person; never
    overwritten by a model) or 'rejected' (removed by a person; kept so no model adds it back)."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("image_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), index=True)  # lower-case: tags match case-insensitively
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)  # as typed ("Ünïcödé Straße"); v4
    source: Mapped[str] = mapped_column(String(200))  # e.g. "zero-shot:clip:...", "imagenet:...", "person", "xmp"
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="suggested")
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class OcrText(Base):
    """Text read in an image by an OCR engine."""

    __tablename__ = "ocr_texts"
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    engine: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class CaptionRow(Base):
    """A caption of an image by one captioner (or a person: spec 'person')."""

    __tablename__ = "captions"
    __table_args__ = (UniqueConstraint("image_id", "spec"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    spec: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))  # the bytes the caption describes
    created_at: Mapped[datetime] = mapped_column(DateTime)
