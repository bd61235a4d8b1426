"""Reading image-caption data sets and question files; every bad row is named by file and line.

Formats:
- Karpathy-split JSON (Flickr30k, COCO): {"images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}]}]}.
- A captions file: CSV with a header (columns image, caption and optionally split) or JSONL with the
  same keys, one caption per row; image paths are relative to the image root (default: the file's folder).
- A questions file: JSONL rows {"image", "question", "answer"} or {"image", "question", "answers": [...]}.
- A negatives file: CSV or JSONL rows {"image", "negative", "caption"?}: a caption false of the image,
  best a minimal edit (attributes or a relation swapped) of the true caption named in "caption";
  for training a reranker.
- A statements file (visual entailment): CSV or JSONL rows {"image", "statement", "label"}, label yes /
  no / maybe (or entailment / contradiction / neutral); "hypothesis" or "text" may name the statement.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from pixsearch.errors import ConfigError

_IMAGE_KEYS = ("image", "file", "filename", "path")
_CAPTION_KEYS = ("caption", "text", "sentence")
_NEGATIVE_KEYS = ("negative",)
_STATEMENT_KEYS = ("statement", "hypothesis", "text", "sentence2")
_LABEL_KEYS = ("label", "answer", "gold_label")
# visual entailment: OFA's answers, and the SNLI-VE relation names read as them
ENTAILMENT_ANSWERS = {
    "yes": "yes",
    "no": "no",
    "maybe": "maybe",
    "entailment": "yes",
    "contradiction": "no",
    "neutral": "maybe",
}
VQA_ANSWERS = 10  # VQAv2 has ten human answers per question; a single "answer" stands for ten agreeing ones


class DataSetError(ConfigError):
    """A data set has bad rows and the policy says stop; `bad` lists them."""

    def __init__(self, message: str, bad: list[BadRow]) -> None:
        super().__init__(message)
        self.bad = bad


class BadRowPolicy(StrEnum):
    SKIP = "skip"  # leave bad rows out, naming each in the report
    STOP = "stop"  # refuse the whole data set before any work starts


@dataclass(frozen=True)
class BadRow:
    file: Path
    line: int  # 1-based line of a CSV / JSONL file; for a Karpathy JSON, the entry number in "images"
    reason: str

    def __str__(self) -> str:
        where = "entry" if self.file.suffix == ".json" else "line"
        return f"{self.file}, {where} {self.line}: {self.reason}"


@dataclass(frozen=True)
class Pair:
    image: Path
    caption: str
    split: str | None = None
    source: Path | None = None  # the file and line (entry) the pair was read from
    line: int = 0


@dataclass
class CaptionSet:
    """Image-caption pairs in file order, with the rows that could not be used."""

    pairs: list[Pair] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)

    def images(self) -> list[Path]:
        """Distinct images, in order of first appearance."""
        return list(dict.fromkeys(pair.image for pair in self.pairs))

    def captions_by_image(self) -> dict[Path, list[str]]:
        grouped: dict[Path, list[str]] = {}
        for pair in self.pairs:
            grouped.setdefault(pair.image, []).append(pair.caption)
        return grouped

    def only(self, split: str | None) -> CaptionSet:
        """The pairs of one split (all of them for None)."""
        if split is None:
            return self
        return CaptionSet([p for p in self.pairs if p.split == split], list(self.bad))


@dataclass(frozen=True)
class Question:
    image: Path
    question: str
    answers: tuple[str, ...]
    split: str | None = None
    source: Path | None = None
    line: int = 0


@dataclass
class QuestionSet:
    questions: list[Question] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)


def enforce(bad: list[BadRow], policy: BadRowPolicy, what: str) -> None:
    """Raise DataSetError listing the bad rows when the policy is STOP and there are any."""
    if bad and policy is BadRowPolicy.STOP:
        listed = "\n  ".join(str(row) for row in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DataSetError(
            f"{what}: {len(bad)} bad row(s); nothing was done (use the skip policy to leave them out):\n  {listed}{more}",
            bad,
        )


def read_pairs(path: Path, image_root: Path | None = None, check_images: bool = True) -> CaptionSet:
    """Read a Karpathy JSON (.json), CSV (.csv) or JSONL (.jsonl) caption file by its suffix.

    Raises:
        ConfigError: the file cannot be read, or its format cannot be told from its name.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        result = read_karpathy(path, image_root)
    elif suffix in (".csv", ".jsonl"):
        result = read_caption_file(path, image_root)
    else:
        raise ConfigError(f"{path}: cannot tell the format; use .json (Karpathy split), .csv or .jsonl")
    if check_images:
        result = _drop_unreadable(result)
    return result


def read_karpathy(path: Path, image_root: Path | None = None) -> CaptionSet:
    """Pairs of a Karpathy-split JSON; image paths are `image_root/filepath/filename` (or
    `image_root/filename` when that exists instead), image_root defaulting to the JSON's folder."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not a readable Karpathy-split JSON file ({error})") from None
    entries = data.get("images") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: no 'images' list; not a Karpathy-split JSON file")
    result = CaptionSet()
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            result.bad.append(BadRow(path, number, "no 'filename'"))
            continue
        image = _karpathy_image(root, entry)
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            result.bad.append(BadRow(path, number, f"{entry['filename']}: no 'sentences'"))
            continue
        for sentence in sentences:
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if not isinstance(raw, str) or not raw.strip():
                result.bad.append(BadRow(path, number, f"{entry['filename']}: a sentence without 'raw' text"))
                continue
            result.pairs.append(Pair(image, raw.strip(), entry.get("split"), path, number))
    return result


def _karpathy_image(root: Path, entry: dict[str, Any]) -> Path:
    nested = root / str(entry.get("filepath", "")) / entry["filename"]
    flat = root / entry["filename"]
    return nested if nested.exists() or not flat.exists() else flat


def read_caption_file(path: Path, image_root: Path | None = None) -> CaptionSet:
    """Pairs of a CSV or JSONL caption file (see the module docstring)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    result = CaptionSet()
    for number, row in _rows(path):
        if isinstance(row, str):
            result.bad.append(BadRow(path, number, row))
            continue
        image = _first(row, _IMAGE_KEYS)
        caption = _first(row, _CAPTION_KEYS)
        if not image:
            result.bad.append(BadRow(path, number, f"no image column ({' / '.join(_IMAGE_KEYS)})"))
        elif not caption:
            result.bad.append(BadRow(path, number, f"no caption ({' / '.join(_CAPTION_KEYS)})"))
        else:
            split = row.get("split") or None
            result.pairs.append(Pair(root / image, caption, str(split) if split else None, path, number))
    return result


@dataclass(frozen=True)
class Negative:
    image: Path
    negative: str  # a caption false of the image
    edits: str | None  # the true caption it was made from, if the file says
    line: int


@dataclass
class NegativeSet:
    negatives: list[Negative] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)


def read_negatives(path: Path, image_root: Path | None = None) -> NegativeSet:
    """Hard negative captions of a CSV or JSONL negatives file (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise ConfigError(f"{path}: a negatives file is .csv or .jsonl with columns image and negative")
    root = Path(image_root) if image_root is not None else path.parent
    result = NegativeSet()
    for number, row in _rows(path, _NEGATIVE_KEYS):
        if isinstance(row, str):
            result.bad.append(BadRow(path, number, row))
            continue
        image, negative = _first(row, _IMAGE_KEYS), _first(row, _NEGATIVE_KEYS)
        if not image or not negative:
            result.bad.append(BadRow(path, number, "needs 'image' and 'negative'"))
        else:
            result.negatives.append(Negative(root / image, negative, _first(row, _CAPTION_KEYS), number))
    return result


def read_questions(path: Path, image_root: Path | None = None, check_images: bool = True) -> QuestionSet:
    """Questions of a JSONL file (see the module docstring); a single 'answer' counts as ten agreeing answers."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    result = QuestionSet()
    for number, row in _rows(path):
        if isinstance(row, str):
            result.bad.append(BadRow(path, number, row))
            continue
        image, question = _first(row, _IMAGE_KEYS), _first(row, ("question",))
        answers = row.get("answers")
        if answers is None and isinstance(row.get("answer"), str):
            answers = [row["answer"]] * VQA_ANSWERS
        if isinstance(answers, list):  # VQAv2 annotations hold {"answer": ...} objects
            answers = [a.get("answer") if isinstance(a, dict) else a for a in answers]
        if not image or not question:
            result.bad.append(BadRow(path, number, "needs 'image' and 'question'"))
        elif not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            result.bad.append(BadRow(path, number, "needs 'answer' (a string) or 'answers' (a list of strings)"))
        else:
            split = row.get("split")
            result.questions.append(
                Question(root / image, question, tuple(answers), str(split) if split else None, path, number)
            )
    return _drop_unreadable_questions(result, path) if check_images else result


def read_statements(path: Path, image_root: Path | None = None, check_images: bool = True) -> QuestionSet:
    """Visual-entailment rows of a CSV or JSONL statements file (see the module docstring).

    Each row is read as a question (the statement) with one answer, yes, no or maybe: the way OFA
    poses the task ("does the image describe ...?"). Labels entailment / contradiction / neutral
    are read as yes / no / maybe.
    """
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise ConfigError(f"{path}: a statements file is .csv or .jsonl with columns image, statement and label")
    root = Path(image_root) if image_root is not None else path.parent
    result = QuestionSet()
    for number, row in _rows(path, _STATEMENT_KEYS):
        if isinstance(row, str):
            result.bad.append(BadRow(path, number, row))
            continue
        image, statement = _first(row, _IMAGE_KEYS), _first(row, _STATEMENT_KEYS)
        label = (_first(row, _LABEL_KEYS) or "").lower()
        if not image or not statement:
            result.bad.append(BadRow(path, number, f"needs 'image' and a statement ({' / '.join(_STATEMENT_KEYS)})"))
        elif label not in ENTAILMENT_ANSWERS:
            known = ", ".join(ENTAILMENT_ANSWERS)
            result.bad.append(BadRow(path, number, f"label {label!r} is not one of {known}"))
        else:
            split = row.get("split")
            answer = (ENTAILMENT_ANSWERS[label],)
            result.questions.append(
                Question(root / image, statement, answer, str(split) if split else None, path, number)
            )
    return _drop_unreadable_questions(result, path) if check_images else result


def _drop_unreadable_questions(result: QuestionSet, path: Path) -> QuestionSet:
    problems = {image: reason for image in {q.image for q in result.questions} if (reason := image_problem(image))}
    kept = []
    for q in result.questions:
        if q.image in problems:
            result.bad.append(BadRow(path, q.line, f"{q.image}: {problems[q.image]}"))
        else:
            kept.append(q)
    result.questions = kept
    return result


def image_problem(path: Path) -> str | None:
    """Why `path` cannot be used as an image (None when it can); reads only the header."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - the header must parse
    except FileNotFoundError:
        return "image file missing"
    except (UnidentifiedImageError, OSError, ValueError) as error:
        return f"not a readable image ({type(error).__name__})"
    return None


def _drop_unreadable(result: CaptionSet) -> CaptionSet:
    problems = {image: reason for image in result.images() if (reason := image_problem(image))}
    if not problems:
        return result
    kept = CaptionSet(bad=list(result.bad))
    for pair in result.pairs:
        if pair.image in problems:
            kept.bad.append(BadRow(pair.source or pair.image, pair.line, f"{pair.image}: {problems[pair.image]}"))
        else:
            kept.pairs.append(pair)
    return kept


def _rows(path: Path, text_keys: tuple[str, ...] = _CAPTION_KEYS) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row) for each non-blank row; a row that does not parse comes as a reason string."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read ({error})") from None
    if path.suffix.lower() == ".csv":
        yield from _csv_rows(path, text, text_keys)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, f"not valid JSON ({error.msg})"
            continue
        yield number, row if isinstance(row, dict) else "not a JSON object"


def _csv_rows(path: Path, text: str, text_keys: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip().lower() for h in header]
    if not any(k in header for k in _IMAGE_KEYS) or not any(k in header for k in text_keys):
        raise ConfigError(
            f"{path}, line 1: the header must name an image column and a {text_keys[0]} column, got {header}"
        )
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield number, f"{len(row)} fields where the header has {len(header)}"
            continue
        yield number, dict(zip(header, (cell.strip() for cell in row), strict=True))


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
