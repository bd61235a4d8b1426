"""XMP sidecar files: keywords as `dc:subject` (an `rdf:Bag`), the form digiKam, darktable and
Lightroom read. The photo itself is never opened for writing.

Merging, not clobbering: an existing sidecar is parsed and only its `dc:subject` bag (and pixsearch's
own `pixsearch:written` bag) is changed; every other element, attribute and keyword stays. pixsearch
records in `pixsearch:written` the keywords it added, so a later run can take back a keyword it wrote
when the tag was since removed in pixsearch, while keywords a person or another program put there are
never removed. A sidecar that is not well-formed XMP is left untouched and reported. Files are written
to a temporary file in the same folder and renamed over the old one, so a reader never sees half a file.

Which file: an existing `photo.jpg.xmp` (darktable, digiKam), else an existing `photo.xmp` (Lightroom,
digiKam's compatible mode); for a new sidecar `naming` picks `photo.jpg.xmp` ("full", default) or
`photo.xmp` ("stem").
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pixsearch.atomic import write_bytes_atomic
from pixsearch.errors import ConfigError, PixsearchError

X = "adobe:ns:meta/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
PIXSEARCH = "urn:x-pixsearch:xmp:1.0/"
WELL_KNOWN = {"x": X, "rdf": RDF, "dc": DC, "pixsearch": PIXSEARCH}
MAX_SIDECAR_BYTES = 16_000_000
HEADER = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
TRAILER = '\n<?xpacket end="w"?>\n'
NAMINGS = ("full", "stem")


class XmpError(PixsearchError):
    """A sidecar cannot be read or merged safely; it was left as it was."""


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _key(keyword: str) -> str:
    return " ".join(keyword.split()).casefold()


def sidecar_path(photo: Path, naming: str = "full") -> Path:
    """The sidecar of `photo`: an existing one if there is one, else the new one `naming` asks for."""
    if naming not in NAMINGS:
        raise ConfigError(f"XMP naming must be one of {', '.join(NAMINGS)}, got {naming!r}")
    full, stem = photo.with_name(photo.name + ".xmp"), photo.with_suffix(".xmp")
    for candidate in (full, stem):
        if candidate.is_file():
            return candidate
    return full if naming == "full" else stem


@dataclass(frozen=True)
class SidecarKeywords:
    subjects: list[str] = field(default_factory=list)  # dc:subject, in file order
    written: set[str] = field(default_factory=set)  # casefolded keywords pixsearch added earlier


@dataclass(frozen=True)
class SidecarUpdate:
    path: Path
    added: list[str]
    removed: list[str]
    created: bool
    changed: bool


def _parse(data: bytes, path: Path) -> tuple[ET.Element, dict[str, str]]:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise XmpError(f"{path}: XMP may not declare a DOCTYPE or entities; left untouched")
    prefixes: dict[str, str] = {}
    try:
        events = ET.iterparse(io.BytesIO(data), events=("start-ns",))
        for _event, (prefix, uri) in events:
            prefixes.setdefault(prefix, uri)
        root = events.root  # type: ignore[attr-defined]
    except ET.ParseError as error:
        raise XmpError(f"{path}: not well-formed XML ({error}); left untouched") from None
    return root, prefixes


def _rdf(root: ET.Element, path: Path) -> ET.Element:
    rdf = root if root.tag == _q(RDF, "RDF") else root.find(_q(RDF, "RDF"))
    if rdf is None:
        raise XmpError(f"{path}: no rdf:RDF element, so not an XMP packet; left untouched")
    return rdf


def _bag_items(description: ET.Element | None, namespace: str, name: str) -> list[str]:
    prop = None if description is None else description.find(_q(namespace, name))
    if prop is None:
        return []
    return [(li.text or "").strip() for li in prop.iter(_q(RDF, "li")) if (li.text or "").strip()]


def _description_with(rdf: ET.Element, namespace: str, name: str) -> ET.Element | None:
    return next((d for d in rdf.findall(_q(RDF, "Description")) if d.find(_q(namespace, name)) is not None), None)


def _read_bytes(path: Path) -> bytes | None:
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise XmpError(f"{path}: larger than {MAX_SIDECAR_BYTES} bytes; left untouched")
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise XmpError(f"{path}: cannot be read ({error.strerror or error})") from None


def read_sidecar(path: Path) -> SidecarKeywords:
    """Keywords of a sidecar (empty when there is no file).

    Raises:
        XmpError: the file is unreadable or not XMP.
    """
    data = _read_bytes(path)
    if data is None:
        return SidecarKeywords()
    rdf = _rdf(_parse(data, path)[0], path)
    subjects = _bag_items(_description_with(rdf, DC, "subject"), DC, "subject")
    written = _bag_items(_description_with(rdf, PIXSEARCH, "written"), PIXSEARCH, "written")
    return SidecarKeywords(subjects, {_key(k) for k in written})


def _set_bag(description: ET.Element, namespace: str, name: str, items: Sequence[str]) -> None:
    prop = description.find(_q(namespace, name))
    if prop is None:
        prop = ET.SubElement(description, _q(namespace, name))
    container = next((c for c in prop if c.tag in {_q(RDF, "Bag"), _q(RDF, "Seq"), _q(RDF, "Alt")}), None)
    if container is None:
        prop.clear()
        container = ET.SubElement(prop, _q(RDF, "Bag"))
    for li in list(container):
        container.remove(li)
    for item in items:
        ET.SubElement(container, _q(RDF, "li")).text = item


def _new_packet() -> ET.Element:
    root = ET.Element(_q(X, "xmpmeta"), {_q(X, "xmptk"): "pixsearch"})
    rdf = ET.SubElement(root, _q(RDF, "RDF"))
    ET.SubElement(rdf, _q(RDF, "Description"), {_q(RDF, "about"): ""})
    return root


def merge_keywords(
    current: Sequence[str], previously_written: set[str], wanted: Sequence[str]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """(subjects, written, added, removed): keep every keyword pixsearch did not write, drop the ones
    it wrote that are no longer wanted, append wanted ones that are missing (compared case-insensitively)."""
    wanted_keys = {_key(w): w for w in wanted}
    kept = [k for k in current if _key(k) in wanted_keys or _key(k) not in previously_written]
    removed = [k for k in current if k not in kept]
    present = {_key(k) for k in kept}
    added = [w for key, w in wanted_keys.items() if key not in present]
    written = sorted({_key(w) for w in added} | (previously_written & set(wanted_keys)))
    return kept + added, written, added, removed


def write_sidecar(photo: Path, tags: Sequence[str], naming: str = "full") -> SidecarUpdate:
    """Merge `tags` into the sidecar of `photo` (creating it if needed); the photo is not touched.

    Raises:
        XmpError: the existing sidecar is unreadable or not XMP (it is left as it was), or cannot be written.
    """
    path = sidecar_path(photo, naming)
    if path.suffix.lower() != ".xmp" or path.resolve() == photo.resolve():
        raise XmpError(f"refusing to write XMP to {path}: not a .xmp sidecar")
    data = _read_bytes(path)
    root, prefixes = _parse(data, path) if data is not None else (_new_packet(), {})
    rdf = _rdf(root, path)
    subject_owner = _description_with(rdf, DC, "subject")
    written_owner = _description_with(rdf, PIXSEARCH, "written")
    current = _bag_items(subject_owner, DC, "subject")
    previous = {_key(k) for k in _bag_items(written_owner, PIXSEARCH, "written")}
    subjects, written, added, removed = merge_keywords(current, previous, tags)
    changed = data is None or bool(added or removed) or set(written) != previous
    if changed:
        # (an Element with no children is falsy: test against None, never with `or`)
        description = next(
            (d for d in (subject_owner, written_owner, rdf.find(_q(RDF, "Description"))) if d is not None), None
        )
        if description is None:
            description = ET.SubElement(rdf, _q(RDF, "Description"), {_q(RDF, "about"): ""})
        _set_bag(description, DC, "subject", subjects)
        _set_bag(written_owner if written_owner is not None else description, PIXSEARCH, "written", written)
        _atomic_write(path, _serialise(root, prefixes))
    return SidecarUpdate(path, added, removed, created=data is None, changed=changed)


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
