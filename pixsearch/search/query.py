"""The query language of `pixsearch search`.

a dog on a beach                 words: a vector query, and keywords any of which may match
"red car"                        a phrase that must appear in names, captions, tags, OCR text or EXIF
-snow                            exclude photos whose names, captions, tags or text contain it
tag:beach  camera:canon          filters (a tag; a camera make or model)
after:2020-01-01 before:2021     filters on the date taken (a year, year-month or full date)
folder:holidays                  only photos whose folder path contains this
has:text  orientation:portrait   photos with OCR text; portrait, landscape or square
2:cat dog                        term weights for the vector query
"cat" + "hat" - "dog"            vector arithmetic over quoted terms (as rclip does)
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime

from pixsearch.errors import ConfigError

ORIENTATIONS = ("portrait", "landscape", "square")
_WEIGHTED = re.compile(r"^(-?\d+(?:\.\d+)?):(.+)$")
_ARITHMETIC = re.compile(r'"[^"]+"\s*[+-]\s*"')


@dataclass(frozen=True)
class Filters:
    after: datetime | None = None
    before: datetime | None = None
    folder: str | None = None
    tags: tuple[str, ...] = ()
    camera: str | None = None
    has_text: bool = False
    orientation: str | None = None

    def __bool__(self) -> bool:
        return any((self.after, self.before, self.folder, self.tags, self.camera, self.has_text, self.orientation))

    def describe(self) -> str:
        """The filters as the query language writes them (for messages)."""
        parts = [f"tag:{tag.replace(' ', '_')}" for tag in self.tags]
        parts += [f"{name}:{value}" for name, value in (("camera", self.camera), ("folder", self.folder)) if value]
        parts += [
            f"{name}:{value:%Y-%m-%d}" for name, value in (("after", self.after), ("before", self.before)) if value
        ]
        parts += ["has:text"] if self.has_text else []
        parts += [f"orientation:{self.orientation}"] if self.orientation else []
        return " ".join(parts)


@dataclass(frozen=True)
class ParsedQuery:
    terms: tuple[tuple[float, str], ...] = ()  # weighted texts whose embeddings are summed
    words: tuple[str, ...] = ()  # plain words: any may match in the keyword index
    phrases: tuple[str, ...] = ()  # quoted: must match
    exclude: tuple[str, ...] = ()
    filters: Filters = field(default_factory=Filters)

    @property
    def has_vector(self) -> bool:
        return bool(self.terms)


def parse_date(text: str, end: bool = False) -> datetime:
    """'2020', '2020-06' or '2020-06-15'; with `end`, the last moment of that period."""
    for fmt, length in (("%Y-%m-%d", 3), ("%Y-%m", 2), ("%Y", 1)):
        try:
            start = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if not end:
            return start
        if length == 1:
            return start.replace(year=start.year + 1)
        if length == 2:
            return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        return start.replace(hour=23, minute=59, second=59, microsecond=999999)
    raise ConfigError(f"date {text!r} is not YYYY, YYYY-MM or YYYY-MM-DD")


def _arithmetic(text: str) -> tuple[tuple[float, str], ...]:
    terms, sign = [], 1.0
    for token in re.findall(r'"[^"]+"|[+-]', text):
        if token in "+-":
            sign = 1.0 if token == "+" else -1.0
        else:
            terms.append((sign, token.strip('"')))
            sign = 1.0
    return tuple(terms)


def parse_query(text: str) -> ParsedQuery:
    """Parse a query string; raises ConfigError naming the part that does not parse."""
    if _ARITHMETIC.search(text):
        return ParsedQuery(terms=_arithmetic(text))
    try:
        tokens = shlex.split(text, posix=True)
    except ValueError:
        raise ConfigError(f"query {text!r} has an unclosed quote") from None
    quoted = set(re.findall(r'"([^"]+)"', text))
    words: list[str] = []
    phrases: list[str] = []
    exclude: list[str] = []
    weighted: list[tuple[float, str]] = []
    filters: dict[str, object] = {"tags": []}
    for token in tokens:
        if token in quoted:
            phrases.append(token)
        elif token.startswith("-") and len(token) > 1 and not token[1].isdigit():
            exclude.append(token[1:])
        elif (match := _WEIGHTED.match(token)) is not None:
            weighted.append((float(match.group(1)), match.group(2)))
        elif ":" in token and token.split(":", 1)[0].lower() in _FILTERS:
            key, value = token.split(":", 1)
            _FILTERS[key.lower()](filters, value)
        else:
            words.append(token)
    plain = " ".join(words + phrases)
    terms = tuple(weighted) + (((1.0, plain),) if plain else ())
    filters["tags"] = tuple(filters["tags"])  # type: ignore[arg-type]
    return ParsedQuery(terms, tuple(w.lower() for w in words), tuple(phrases), tuple(exclude), Filters(**filters))


def _set(name: str, convert=lambda v: v):
    def setter(filters: dict[str, object], value: str) -> None:
        if not value:
            raise ConfigError(f"filter {name}: needs a value")
        filters[name] = convert(value)

    return setter


def _orientation(value: str) -> str:
    if value.lower() not in ORIENTATIONS:
        raise ConfigError(f"orientation:{value} is not one of {', '.join(ORIENTATIONS)}")
    return value.lower()


def _has(filters: dict[str, object], value: str) -> None:
    if value.lower() != "text":
        raise ConfigError(f"has:{value} is not known; has:text is")
    filters["has_text"] = True


def _tag(filters: dict[str, object], value: str) -> None:
    if not value:
        raise ConfigError("filter tag: needs a value")
    filters["tags"].append(value.replace("_", " ").lower())  # type: ignore[union-attr]


_FILTERS = {
    "tag": _tag,
    "after": _set("after", parse_date),
    "before": _set("before", lambda v: parse_date(v, end=False)),
    "camera": _set("camera"),
    "folder": _set("folder"),
    "has": _has,
    "orientation": _set("orientation", _orientation),
}
