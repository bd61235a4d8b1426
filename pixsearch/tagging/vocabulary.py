"""The tag vocabulary of the zero-shot tagger: a built-in everyday list, extendable by the user.

File format (the built-in `data/vocabulary.txt` documents it at its top): one tag per line, `#`
comments, `[kind]` section headers choosing the prompt templates, `tag = phrase` to prompt with a
phrase instead of the tag, and (in a user file) `-tag` to remove a built-in tag.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from pixsearch.errors import ConfigError
from pixsearch.storage.annotations import normalise_tag

# Prompt templates per kind; "{}" receives the tag's noun phrase. Several templates per tag are
# averaged in embedding space ("prompt ensembling", Radford et al. 2021, sec. 3.1.4).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "thing": (
        "a photo of {}.",
        "a close-up photo of {}.",
        "a cropped photo of {}.",
        "a bright photo of {}.",
        "a dark photo of {}.",
        "a good photo of {}.",
    ),
    "mass": ("a photo of {}.", "a close-up photo of {}.", "a photo with {} in it.", "a good photo of {}."),
    "scene": ("a photo of {}.", "a photo taken at {}.", "a photo taken in {}.", "a view of {}."),
    "activity": ("a photo of a person {}.", "a photo of people {}.", "a photo of someone {}."),
    "event": ("a photo of {}.", "a photo taken at {}.", "a photo of people at {}."),
    "style": ("{} photo.", "{} picture.", "{} image."),
    "condition": ("a photo taken {}.", "a picture taken {}.", "an outdoor photo taken {}."),
}
# The statement an entailment model checks to verify a tag (pixsearch tag --verify).
STATEMENTS: dict[str, str] = {
    "thing": "there is {} in the photo",
    "mass": "there is {} in the photo",
    "scene": "the photo shows {}",
    "activity": "someone is {} in the photo",
    "event": "the photo shows {}",
    "style": "this is {} photo",
    "condition": "the photo was taken {}",
}
KINDS = tuple(TEMPLATES)
_ARTICLE_KINDS = {"thing", "scene", "event", "style"}


def with_article(phrase: str) -> str:
    """'a dog', 'an owl'; a phrase that already starts with an article is kept."""
    if phrase.split(" ", 1)[0].lower() in {"a", "an", "the", "some"}:
        return phrase
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


@dataclass(frozen=True)
class Entry:
    """One tag: its name (normalised), kind, and the phrase put into prompts."""

    name: str
    kind: str = "thing"
    phrase: str | None = None

    def noun_phrase(self) -> str:
        if self.phrase is not None:
            return self.phrase
        return with_article(self.name) if self.kind in _ARTICLE_KINDS else self.name

    def prompts(self) -> list[str]:
        return [template.format(self.noun_phrase()) for template in TEMPLATES[self.kind]]

    def statement(self) -> str:
        return STATEMENTS[self.kind].format(self.noun_phrase())


@dataclass(frozen=True)
class Vocabulary:
    entries: tuple[Entry, ...]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def get(self, name: str) -> Entry | None:
        wanted = normalise_tag(name)
        return next((entry for entry in self.entries if entry.name == wanted), None)

    def statement(self, tag: str) -> str:
        """The sentence that says `tag` holds for a photo (a tag not in the vocabulary is a thing)."""
        entry = self.get(tag) or Entry(normalise_tag(tag))
        return entry.statement()

    def fingerprint(self) -> str:
        """A hash of every tag, kind and prompt: cached text vectors are valid while it is unchanged."""
        digest = hashlib.sha256()
        for entry in self.entries:
            digest.update("\x1f".join([entry.name, entry.kind, *entry.prompts()]).encode() + b"\x1e")
        return digest.hexdigest()[:16]

    @classmethod
    def builtin(cls) -> Vocabulary:
        text = files("pixsearch.tagging").joinpath("data/vocabulary.txt").read_text(encoding="utf-8")
        return cls(tuple(parse(text.splitlines(), "built-in vocabulary")))

    @classmethod
    def load(cls, extra: Sequence[Path] = (), builtin: bool = True) -> Vocabulary:
        """The built-in vocabulary (unless `builtin` is False) extended by user files in order.

        A user line `-tag` removes a tag; a tag listed again replaces the earlier entry's kind and phrase.

        Raises:
            ConfigError: a file cannot be read or has a malformed line (named with its line number).
        """
        merged: dict[str, Entry] = {e.name: e for e in cls.builtin().entries} if builtin else {}
        for path in extra:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigError(f"vocabulary file {path} cannot be read: {error}") from None
            for entry in parse(lines, str(path), allow_removal=True):
                if entry.kind == "-":
                    merged.pop(entry.name, None)
                else:
                    merged[entry.name] = entry
        if not merged:
            raise ConfigError("the tag vocabulary is empty")
        return cls(tuple(merged.values()))


def parse(lines: Iterable[str], source: str, allow_removal: bool = False) -> list[Entry]:
    """Entries of a vocabulary file; a removal line gives an Entry of kind '-'.

    Raises:
        ConfigError: an unknown section, an empty tag or phrase (naming `source` and the line).
    """
    kind = "thing"
    entries: dict[str, Entry] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number}"
        if line.startswith("[") and line.endswith("]"):
            kind = line[1:-1].strip().lower()
            if kind not in TEMPLATES:
                raise ConfigError(f"{where}: unknown section [{kind}]; sections: {', '.join(KINDS)}")
            continue
        if line.startswith("-") and allow_removal:
            name = _name(line[1:], where)
            entries[name] = Entry(name, "-")
            continue
        name_part, sep, phrase = line.partition("=")
        name = _name(name_part, where)
        phrase = " ".join(phrase.split())
        if sep and not phrase:
            raise ConfigError(f"{where}: 'tag = phrase' with an empty phrase")
        entries.pop(name, None)  # a repeated tag: the later line wins
        entries[name] = Entry(name, kind, phrase or None)
    return list(entries.values())


def _name(text: str, where: str) -> str:
    try:
        return normalise_tag(text)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
