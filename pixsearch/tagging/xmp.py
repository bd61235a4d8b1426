"""XMP sidecar files: keywords in the three lists photo managers read, kept consistent.

- `dc:subject` (a Bag of flat keywords): Lightroom, and everyone's fallback;
- `lr:hierarchicalSubject` (a Bag of `a|b|c` paths): darktable reads it first and falls back to
  dc:subject only when it is absent, so a keyword missing there is invisible to darktable;
- `digiKam:TagsList` (a Seq of `a/b/c` paths): what digiKam reads first.

Reading: a keyword is a leaf of a path, or a dc:subject entry that is not just a level above one
(darktable and Lightroom put every level of `Places|France|Paris` in dc:subject); tool-internal
hierarchies (`darktable|...`, `_Digikam_Internal_Tags_/...`) are not keywords. Keywords keep the case
they were typed in and are compared case-insensitively.

Writing merges, never clobbers: an existing sidecar is parsed and only these lists (and pixsearch's
own `pixsearch:written` bag) change; every other element, attribute and keyword stays. pixsearch
writes a keyword as a flat entry in each list and records in `pixsearch:written` the keywords it
added, so a later run can take back a keyword it wrote when the tag was since removed in pixsearch,
while keywords a person or another program put there are never removed. When pixsearch writes, the
three lists are completed: each gets every keyword it lacks (as the other path list's path to it, else flat), so
whichever list a program reads first, it sees them all. A sidecar that is not well-formed XMP is left untouched and reported.
Files are written to a temporary file in the same folder and renamed over the old one.

Which file: an existing `photo.jpg.xmp` (darktable, digiKam), else an existing `photo.xmp` (Lightroom,
digiKam's compatible mode); for a new sidecar `naming` picks `photo.jpg.xmp` ("full", default) or
`photo.xmp` ("stem").
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pixsearch.atomic import write_bytes_atomic
from pixsearch.errors import ConfigError, XmpError
from pixsearch.xmpdoc import DC, RDF, X, parse_packet, q, rdf_of, read_limited, sidecar_candidates

__all__ = ["XmpError", "read_sidecar", "sidecar_path", "write_sidecar", "merge_keywords"]

LR = "http://ns.adobe.com/lightroom/1.0/"
DIGIKAM = "http://www.digikam.org/ns/1.0/"
PIXSEARCH = "urn:x-pixsearch:xmp:1.0/"
WELL_KNOWN = {"x": X, "rdf": RDF, "dc": DC, "lr": LR, "digiKam": DIGIKAM, "pixsearch": PIXSEARCH}
HEADER = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
TRAILER = '\n<?xpacket end="w"?>\n'
NAMINGS = ("full", "stem")
# the roots of the hierarchies tools keep for themselves (darktable|format|jpg, darktable|changed, ...)
INTERNAL_ROOTS = frozenset({"darktable", "_digikam_internal_tags_"})


@dataclass(frozen=True)
class KeywordList:
    namespace: str
    name: str
    separator: str | None  # between the levels of a path; None: flat keywords
    container: str  # rdf:Bag or rdf:Seq, for a list created here


SUBJECT = KeywordList(DC, "subject", None, "Bag")
HIERARCHICAL = KeywordList(LR, "hierarchicalSubject", "|", "Bag")
TAGS_LIST = KeywordList(DIGIKAM, "TagsList", "/", "Seq")
LISTS = (SUBJECT, HIERARCHICAL, TAGS_LIST)
WRITTEN = KeywordList(PIXSEARCH, "written", None, "Bag")


def _key(keyword: str) -> str:
    return " ".join(keyword.split()).casefold()


def _levels(entry: str, separator: str | None) -> list[str]:
    parts = entry.split(separator) if separator else [entry]
    return [part.strip() for part in parts if part.strip()]


def _internal(levels: Sequence[str]) -> bool:
    return len(levels) > 1 and levels[0].casefold() in INTERNAL_ROOTS


def sidecar_path(photo: Path, naming: str = "full") -> Path:
    """The sidecar of `photo`: an existing one if there is one, else the new one `naming` asks for."""
    if naming not in NAMINGS:
        raise ConfigError(f"XMP naming must be one of {', '.join(NAMINGS)}, got {naming!r}")
    full, stem = sidecar_candidates(photo)
    for candidate in (full, stem):
        if candidate.is_file():
            return candidate
    return full if naming == "full" else stem


@dataclass(frozen=True)
class SidecarKeywords:
    subjects: list[str] = field(default_factory=list)  # dc:subject, in file order
    hierarchical: list[str] = field(default_factory=list)  # lr:hierarchicalSubject, as written
    tags_list: list[str] = field(default_factory=list)  # digiKam:TagsList, as written
    written: set[str] = field(default_factory=set)  # casefolded keywords pixsearch added earlier

    def entries(self, keyword_list: KeywordList) -> list[str]:
        return {SUBJECT: self.subjects, HIERARCHICAL: self.hierarchical, TAGS_LIST: self.tags_list}[keyword_list]

    def paths(self) -> list[list[str]]:
        """Every path of both hierarchical lists (levels), tool-internal ones left out."""
        paths = [_levels(e, HIERARCHICAL.separator) for e in self.hierarchical]
        paths += [_levels(e, TAGS_LIST.separator) for e in self.tags_list]
        return [levels for levels in paths if levels and not _internal(levels)]

    @property
    def keywords(self) -> list[str]:
        """The photo's keywords, one per case-insensitive name, as first written: dc:subject entries
        that are not only a level above a path's leaf, then the leaves of the paths."""
        paths = self.paths()
        above = {_key(level) for levels in paths for level in levels[:-1]} - {_key(levels[-1]) for levels in paths}
        flat = [s for s in self.subjects if _key(s) not in above and not _internal(_levels(s, "|"))]
        return _unique([*flat, *(levels[-1] for levels in paths)])


def _unique(keywords: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for keyword in keywords:
        seen.setdefault(_key(keyword), keyword)
    return list(seen.values())


def _bag_items(rdf: ET.Element, keyword_list: KeywordList) -> list[str]:
    """The list's entries (none when no rdf:Description holds it)."""
    tag = q(keyword_list.namespace, keyword_list.name)
    prop = next((d.find(tag) for d in rdf.findall(q(RDF, "Description")) if d.find(tag) is not None), None)
    if prop is None:
        return []
    return [(li.text or "").strip() for li in prop.iter(q(RDF, "li")) if (li.text or "").strip()]


def _keywords_of(rdf: ET.Element) -> SidecarKeywords:
    return SidecarKeywords(
        subjects=_bag_items(rdf, SUBJECT),
        hierarchical=_bag_items(rdf, HIERARCHICAL),
        tags_list=_bag_items(rdf, TAGS_LIST),
        written={_key(k) for k in _bag_items(rdf, WRITTEN)},
    )


def read_sidecar(path: Path) -> SidecarKeywords:
    """Keywords of a sidecar (empty when there is no file).

    Raises:
        XmpError: the file is unreadable or not XMP.
    """
    data = read_limited(path)
    if data is None:
        return SidecarKeywords()
    return _keywords_of(rdf_of(parse_packet(data, path)[0], path))


def merge_keywords(
    current: Sequence[str], previously_written: set[str], wanted: Sequence[str]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """(keywords, written, added, removed): keep every keyword pixsearch did not write, drop the ones
    it wrote that are no longer wanted, append wanted ones that are missing (compared case-insensitively)."""
    wanted_keys = {_key(w): w for w in wanted}
    kept = [k for k in current if _key(k) in wanted_keys or _key(k) not in previously_written]
    removed = [k for k in current if k not in kept]
    present = {_key(k) for k in kept}
    added = [w for key, w in wanted_keys.items() if key not in present]
    written = sorted({_key(w) for w in added} | (previously_written & set(wanted_keys)))
    return kept + added, written, added, removed


def _edited(keyword_list: KeywordList, found: SidecarKeywords, keywords: Sequence[str], removed: set[str]) -> list[str]:
    """The list's entries after the merge: its own, less the flat ones taken back, plus every keyword it
    lacks (a path list takes the other path list's path to it, else a flat entry)."""
    separator = keyword_list.separator
    # pixsearch writes flat entries only, so only a flat entry is ever taken back
    entries = [e for e in found.entries(keyword_list) if not (len(_levels(e, separator)) == 1 and _key(e) in removed)]
    have = {_key(levels[-1]) for levels in (_levels(e, separator) for e in entries) if levels}
    wanted = {_key(k) for k in keywords}
    if separator is not None:
        for levels in found.paths():
            if _key(levels[-1]) in wanted and _key(levels[-1]) not in have:
                entries.append(separator.join(levels))
                have.add(_key(levels[-1]))
    return entries + [k for k in keywords if _key(k) not in have]


def write_sidecar(photo: Path, tags: Sequence[str], naming: str = "full") -> SidecarUpdate:
    """Merge `tags` into the sidecar of `photo` (creating it if needed); the photo is not touched.

    Raises:
        XmpError: the existing sidecar is unreadable or not XMP (it is left as it was), or cannot be written.
    """
    path = sidecar_path(photo, naming)
    if path.suffix.lower() != ".xmp" or path.resolve() == photo.resolve():
        raise XmpError(f"refusing to write XMP to {path}: not a .xmp sidecar")
    data = read_limited(path)
    root, prefixes = parse_packet(data, path) if data is not None else (_new_packet(), {})
    rdf = rdf_of(root, path)
    found = _keywords_of(rdf)
    keywords, written, added, removed = merge_keywords(found.keywords, found.written, tags)
    changed = data is None or bool(added or removed) or set(written) != found.written
    if changed:
        removed_keys = {_key(k) for k in removed}
        for keyword_list in LISTS:
            _set_bag(rdf, keyword_list, _edited(keyword_list, found, keywords, removed_keys))
        _set_bag(rdf, WRITTEN, written)
        _atomic_write(path, _serialise(root, prefixes))
    return SidecarUpdate(path, added, removed, created=data is None, changed=changed)


@dataclass(frozen=True)
class SidecarUpdate:
    path: Path
    added: list[str]
    removed: list[str]
    created: bool
    changed: bool


def _set_bag(rdf: ET.Element, keyword_list: KeywordList, items: Sequence[str]) -> None:
    """Replace the list's items where it is, or add it to the first rdf:Description."""
    tag = q(keyword_list.namespace, keyword_list.name)
    descriptions = rdf.findall(q(RDF, "Description"))
    owner = next((d for d in descriptions if d.find(tag) is not None), None)
    if owner is None:
        owner = descriptions[0] if descriptions else ET.SubElement(rdf, q(RDF, "Description"), {q(RDF, "about"): ""})
    prop = owner.find(tag)
    if prop is None:
        prop = ET.SubElement(owner, tag)
    kinds = {q(RDF, "Bag"), q(RDF, "Seq"), q(RDF, "Alt")}
    container = next((c for c in prop if c.tag in kinds), None)
    if container is None:
        prop.clear()
        container = ET.SubElement(prop, q(RDF, keyword_list.container))
    for li in list(container):
        container.remove(li)
    for item in items:
        ET.SubElement(container, q(RDF, "li")).text = item


def _new_packet() -> ET.Element:
    root = ET.Element(q(X, "xmpmeta"), {q(X, "xmptk"): "pixsearch"})
    rdf = ET.SubElement(root, q(RDF, "RDF"))
    ET.SubElement(rdf, q(RDF, "Description"), {q(RDF, "about"): ""})
    return root


def _serialise(root: ET.Element, prefixes: dict[str, str]) -> bytes:
    # ElementTree names namespaces from a process-wide table: give it this file's own prefixes so
    # other programs see the prefixes they wrote (prefix names matter to some XMP readers)
    for prefix, uri in {**WELL_KNOWN, **prefixes}.items():
        if prefix and not prefix.startswith("ns"):
            ET.register_namespace(prefix, uri)
    ET.indent(root, space=" ")
    return (HEADER + ET.tostring(root, encoding="unicode") + TRAILER).encode("utf-8")


def _atomic_write(path: Path, payload: bytes) -> None:
    try:
        write_bytes_atomic(path, payload, keep_mode=True)
    except OSError as error:
        raise XmpError(f"{path}: cannot write next to it ({error.strerror or error})") from None
