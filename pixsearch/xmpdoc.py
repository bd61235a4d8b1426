"""Reading XMP packets safely: sidecar files beside a photo and packets embedded in it.

Shared by the indexer (dates) and tagging (keywords). A packet that declares a DOCTYPE or entities
is refused (no entity expansion, no external fetch); a sidecar larger than MAX_SIDECAR_BYTES is
not read.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from pixsearch.errors import XmpError

X = "adobe:ns:meta/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
XMP = "http://ns.adobe.com/xap/1.0/"
PHOTOSHOP = "http://ns.adobe.com/photoshop/1.0/"
EXIF = "http://ns.adobe.com/exif/1.0/"
MAX_SIDECAR_BYTES = 16_000_000
# what a date was created at, best first: the moment the picture was taken, then when a file of it was made
DATE_PROPERTIES = ((PHOTOSHOP, "DateCreated"), (EXIF, "DateTimeOriginal"), (XMP, "CreateDate"))
# XMP dates (ISO 8601 subsets): YYYY, YYYY-MM, YYYY-MM-DD, then optionally Thh:mm[:ss[.s+]] and a zone
_XMP_DATE = re.compile(
    r"(\d{4})(?:[-:](\d{2})(?:[-:](\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?)?)?"
    r"\s*(?:Z|[+-]\d{2}:?\d{2})?"
)


def q(namespace: str, name: str) -> str:
    """ElementTree's name for `name` in `namespace`."""
    return f"{{{namespace}}}{name}"


def parse_packet(data: bytes, path: Path | str) -> tuple[ET.Element, dict[str, str]]:
    """(root element, prefix -> namespace as the packet declares them).

    Raises:
        XmpError: not well-formed XML, or it declares a DOCTYPE or entities.
    """
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


def rdf_of(root: ET.Element, path: Path | str) -> ET.Element:
    """The packet's rdf:RDF element.

    Raises:
        XmpError: there is none (not an XMP packet).
    """
    rdf = root if root.tag == q(RDF, "RDF") else root.find(f".//{q(RDF, 'RDF')}")
    if rdf is None:
        raise XmpError(f"{path}: no rdf:RDF element, so not an XMP packet; left untouched")
    return rdf


def read_limited(path: Path) -> bytes | None:
    """The bytes of a sidecar, or None when there is no such file.

    Raises:
        XmpError: it is larger than MAX_SIDECAR_BYTES or cannot be read.
    """
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise XmpError(f"{path}: larger than {MAX_SIDECAR_BYTES} bytes; left untouched")
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise XmpError(f"{path}: cannot be read ({error.strerror or error})") from None


def sidecar_candidates(photo: Path) -> tuple[Path, Path]:
    """`photo.jpg.xmp` (darktable, digiKam) and `photo.xmp` (Lightroom, digiKam's compatible mode)."""
    return photo.with_name(photo.name + ".xmp"), photo.with_suffix(".xmp")


def property_text(rdf: ET.Element, namespace: str, name: str) -> str | None:
    """A simple property's value in any rdf:Description: an attribute, an element's text, or the
    first item of an rdf:Alt/Seq/Bag in it."""
    for description in rdf.iter(q(RDF, "Description")):
        value = description.get(q(namespace, name))
        if value is None:
            element = description.find(q(namespace, name))
            if element is not None:
                item = element.find(f".//{q(RDF, 'li')}")
                value = (item if item is not None else element).text
        if value and value.strip():
            return value.strip()
    return None


def parse_xmp_date(text: str) -> datetime | None:
    """The local date and time an XMP date says (its zone dropped, like EXIF's); None if not a date.

    A date without a time is taken at midnight, a year or month alone at its first day.
    """
    match = _XMP_DATE.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) if part else None for part in match.groups())
    try:
        return datetime(year or 1, month or 1, day or 1, hour or 0, minute or 0, second or 0)
    except ValueError:
        return None


def packet_date(data: bytes, path: Path | str) -> datetime | None:
    """The creation date an XMP packet holds (DATE_PROPERTIES, best first), or None; never raises."""
    try:
        rdf = rdf_of(parse_packet(data, path)[0], path)
    except XmpError:
        return None
    for namespace, name in DATE_PROPERTIES:
        text = property_text(rdf, namespace, name)
        taken = parse_xmp_date(text) if text else None
        if taken is not None:
            return taken
    return None
