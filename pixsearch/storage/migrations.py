"""Schema versions. A new version appends a step to MIGRATIONS; opening a library runs what is due."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection, Engine, inspect, select, text

from pixsearch.errors import LibraryError
from pixsearch.storage.keywords import ensure_keyword_index
from pixsearch.storage.schema import SCHEMA_VERSION, Base, ImageRow, Meta

log = logging.getLogger(__name__)


def _v1_to_v2(connection: Connection) -> None:
    """Tags, OCR text, captions and the keyword index; documents for the images already there."""
    from sqlalchemy.orm import Session

    from pixsearch.storage import keywords

    Base.metadata.create_all(connection)
    ensure_keyword_index(connection)
    with Session(bind=connection) as session:
        ids = session.execute(select(ImageRow.id)).scalars().all()
        keywords.refresh(session, ids)
        session.flush()


def _v2_to_v3(connection: Connection) -> None:
    """Keyword documents rebuilt without the captions models wrote (see `storage.keywords`): until v3,
    opening a photo's page put its generated caption into word rankings."""
    from sqlalchemy.orm import Session

    from pixsearch.storage import keywords

    with Session(bind=connection) as session:
        keywords.refresh(session, session.execute(select(ImageRow.id)).scalars().all())
        session.flush()


def _v3_to_v4(connection: Connection) -> None:
    """Tags keep the case they were typed in (`tags.label`); `tags.name` stays the lower-case key.
    Tags stored before keep showing lower-case (their label is empty)."""
    if "label" not in {column["name"] for column in inspect(connection).get_columns("tags")}:
        connection.execute(text("ALTER TABLE tags ADD COLUMN label VARCHAR(200)"))


# MIGRATIONS[v] upgrades a database at version v to v + 1.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def schema_version(connection: Connection) -> int | None:
    if not inspect(connection).has_table(Meta.__tablename__):
        return None
    value = connection.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar_one_or_none()
    return int(value) if value is not None else None


def migrate(engine: Engine) -> int:
    """Create a new database or bring an old one up to SCHEMA_VERSION; returns the version.

    Raises:
        LibraryError: the database was written by a newer pixsearch, or a migration is missing.
    """
    with engine.begin() as connection:
        version = schema_version(connection)
        if version is None:
            Base.metadata.create_all(connection)
            ensure_keyword_index(connection)
            connection.execute(Meta.__table__.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            return SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise LibraryError(
                f"database schema version {version} is newer than this pixsearch understands ({SCHEMA_VERSION}); "
                "upgrade pixsearch"
            )
        while version < SCHEMA_VERSION:
            step = MIGRATIONS.get(version)
            if step is None:
                raise LibraryError(f"no migration from schema version {version} to {version + 1}")
            log.info("migrating library schema %d -> %d", version, version + 1)
            step(connection)
            version += 1
        Base.metadata.create_all(connection)  # tables added since, created empty
        connection.execute(Meta.__table__.update().where(Meta.key == "schema_version").values(value=str(version)))
        return version
