"""Text collections: lines of a file embedded with the library's model, for image->text lookups."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from pixsearch.errors import ConfigError
from pixsearch.models.roles import DualEncoder, Tower
from pixsearch.storage.library import TEXTS, Library, vector_bytes
from pixsearch.storage.schema import TextEmbedding, TextRow


@dataclass
class TextReport:
    added: int = 0
    existing: int = 0
    blank: int = 0


def read_lines(path: Path) -> list[str]:
    """The stripped lines of a UTF-8 text file.

    Raises:
        ConfigError: the file is missing, unreadable, or a line is not UTF-8 (names the line).
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read text collection ({error.strerror or error})") from None
    lines = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            lines.append(line.decode("utf-8").strip())
        except UnicodeDecodeError:
            raise ConfigError(f"{path}, line {number}: not valid UTF-8") from None
    return lines


def index_texts(
    library: Library,
    encoder: DualEncoder,
    path: Path,
    collection: str | None = None,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    lock_wait_s: float = 0.0,
) -> TextReport:
    """Add every non-blank line of `path` to the text collection `collection` (default: the file's name),
    holding the library's writer lock.

    Raises:
        LibraryBusyError: another process is writing to the library.
    """
    with library.writing("pixsearch index-texts", lock_wait_s):
        return _index_texts(library, encoder, path, collection, batch_size, progress)


def _index_texts(
    library: Library,
    encoder: DualEncoder,
    path: Path,
    collection: str | None,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> TextReport:
    lines = read_lines(path)
    name = collection or Path(path).name
    report = TextReport(blank=sum(1 for line in lines if not line))
    wanted = list(dict.fromkeys(line for line in lines if line))
    encoder.load_towers(Tower.TEXT)
    with library.session() as session:
        model = library.use_model(session, str(encoder.spec), encoder.preprocess_id, encoder.dim)
        existing = set(
            session.execute(
                select(TextRow.text)
                .join(TextEmbedding, TextEmbedding.text_id == TextRow.id)
                .where(TextRow.collection == name, TextEmbedding.model_key == model.key)
            ).scalars()
        )
    todo = [text for text in wanted if text not in existing]
    report.existing = len(wanted) - len(todo)
    index = library.load_index(TEXTS, model)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        vectors = encoder.encode_texts(batch)
        with library.session() as session:
            rows = {
                r.text: r
                for r in session.execute(
                    select(TextRow).where(TextRow.collection == name, TextRow.text.in_(batch))
                ).scalars()
            }
            embeddings = []
            for text, vector in zip(batch, vectors, strict=True):
                row = rows.get(text) or TextRow(collection=name, text=text)
                session.add(row)
                embedding = TextEmbedding(model_key=model.key, vector=vector_bytes(vector))
                session.flush()
                embedding.text_id = row.id
                session.add(embedding)
                embeddings.append(embedding)
            session.flush()
            index.add(
                np.asarray([e.id for e in embeddings], dtype=np.int64),
                vectors,
                np.asarray([e.text_id for e in embeddings], dtype=np.int64),
            )
            index.generation = library.bump_generation(session, TEXTS, model.key)
        report.added += len(batch)
        if progress:
            progress(report.added, len(todo))
    library.save_index(TEXTS, model.key, index)
    return report
