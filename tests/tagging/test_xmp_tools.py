"""XMP sidecars as other programs see them: exiftool reads what pixsearch writes, a person edits with
exiftool, pixsearch imports the edit, and darktable- and digiKam-shaped sidecars keep working."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from pixsearch.storage.annotations import set_tag_state, tags_of
from pixsearch.storage.schema import ImageRow
from pixsearch.tagging.service import TaggingService, TagOptions
from pixsearch.tagging.xmp import read_sidecar, write_sidecar

pytestmark = pytest.mark.skipif(
    shutil.which("exiftool") is None, reason="exiftool is not installed (Debian: libimage-exiftool-perl)"
)

LISTS = ("Subject", "HierarchicalSubject", "TagsList")
PACKET = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="{toolkit}">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/" {extra}>
   {body}
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


def bag(name: str, items: list[str], kind: str = "Bag") -> str:
    return f"<{name}><rdf:{kind}>" + "".join(f"<rdf:li>{i}</rdf:li>" for i in items) + f"</rdf:{kind}></{name}>"


# darktable 4: every level of a tag in dc:subject, its own tags (darktable|...) in lr:hierarchicalSubject only
DARKTABLE = PACKET.format(
    toolkit="XMP Core 4.4.0-Exiv2",
    extra='xmlns:darktable="http://darktable.sf.net/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="3" '
    'darktable:xmp_version="5"',
    body=bag("dc:subject", ["France", "Paris", "places"])
    + bag("lr:hierarchicalSubject", ["darktable|format|jpg", "darktable|changed", "places|France|Paris"])
    + '<darktable:history><rdf:Seq><rdf:li darktable:operation="exposure"/></rdf:Seq></darktable:history>',
)
# digiKam 8: TagsList first, its internal tags under _Digikam_Internal_Tags_, leaves in dc:subject
DIGIKAM = PACKET.format(
    toolkit="XMP Core 4.4.0-Exiv2",
    extra='xmlns:digiKam="http://www.digikam.org/ns/1.0/" xmlns:MicrosoftPhoto="http://ns.microsoft.com/photo/1.0/"',
    body=bag("digiKam:TagsList", ["People/Alice", "_Digikam_Internal_Tags_/Original Version"], "Seq")
    + bag("MicrosoftPhoto:LastKeywordXMP", ["People/Alice"])
    + bag("lr:hierarchicalSubject", ["People|Alice"])
    + bag("dc:subject", ["Alice"]),
)


def exiftool(path: Path, *args: str) -> dict[str, list[str]]:
    """The three keyword lists as exiftool reads them (after running `args` on the file, if any)."""
    if args:
        subprocess.run(["exiftool", "-q", "-overwrite_original", *args, str(path)], check=True)
    out = subprocess.run(
        ["exiftool", "-j", "-charset", "utf8", *(f"-{name}" for name in LISTS), str(path)],
        check=True,
        capture_output=True,
    ).stdout
    found = json.loads(out)[0]
    return {name: _as_list(found.get(name)) for name in LISTS}


def _as_list(value: object) -> list[str]:
    """exiftool -j gives a one-item list as a plain value."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(b"\xff\xd8 a photo")
    os.chmod(path, 0o644)
    return path


def test_exiftool_reads_the_same_keywords_in_every_list(photo: Path) -> None:
    old = os.umask(0o022)
    try:
        sidecar = write_sidecar(photo, ["Beach", "Ünïcödé Straße", "dog"]).path
    finally:
        os.umask(old)
    assert exiftool(sidecar) == {name: ["Beach", "Ünïcödé Straße", "dog"] for name in LISTS}
    assert os.stat(sidecar).st_mode & 0o777 == os.stat(photo).st_mode & 0o777 == 0o644  # readable like the photo
    validation = subprocess.run(["exiftool", "-validate", "-warning", "-a", str(sidecar)], capture_output=True)
    assert b"Warning" not in validation.stdout and b"OK" in validation.stdout, validation.stdout


def test_a_darktable_sidecar(photo: Path) -> None:
    sidecar = photo.with_name(photo.name + ".xmp")
    sidecar.write_text(DARKTABLE, encoding="utf-8")
    assert read_sidecar(sidecar).keywords == ["Paris"]  # not its levels above, not darktable's own tags
    write_sidecar(photo, ["paris", "Dog"])
    assert exiftool(sidecar) == {
        "Subject": ["France", "Paris", "places", "Dog"],
        # darktable reads this list first: without "Dog" here, darktable would not show it
        "HierarchicalSubject": ["darktable|format|jpg", "darktable|changed", "places|France|Paris", "Dog"],
        "TagsList": ["places/France/Paris", "Dog"],  # created holding every keyword, internal ones left out
    }
    text = sidecar.read_text(encoding="utf-8")
    assert 'xmp:Rating="3"' in text and 'darktable:operation="exposure"' in text


def test_a_digikam_sidecar(photo: Path) -> None:
    sidecar = photo.with_suffix(".xmp")  # digiKam's compatible naming
    sidecar.write_text(DIGIKAM, encoding="utf-8")
    assert read_sidecar(sidecar).keywords == ["Alice"]
    write_sidecar(photo, ["Alice", "Beach"])
    assert exiftool(sidecar) == {
        "Subject": ["Alice", "Beach"],
        "HierarchicalSubject": ["People|Alice", "Beach"],
        "TagsList": ["People/Alice", "_Digikam_Internal_Tags_/Original Version", "Beach"],
    }
    assert "MicrosoftPhoto:LastKeywordXMP" in sidecar.read_text(encoding="utf-8")


def test_write_edit_with_exiftool_import_round_trip(library_copy) -> None:
    library, photos = library_copy()
    with library.session() as session:
        ids = {Path(path).name: image_id for image_id, path in session.execute(select(ImageRow.id, ImageRow.path))}
        mine, darktable = ids["img_0001.png"], ids["img_0002.png"]
        set_tag_state(session, mine, "Ünïcödé Straße", "confirmed")
        set_tag_state(session, mine, "Dog", "confirmed")
    (photos / "img_0002.png.xmp").write_text(DARKTABLE, encoding="utf-8")
    xmp_only = TagOptions(zero_shot=False, import_xmp=True, write_xmp=True, xmp_confirmed_only=True)
    TaggingService(library, xmp_only).run()
    sidecar = photos / "img_0001.png.xmp"
    assert exiftool(sidecar) == {name: ["Dog", "Ünïcödé Straße"] for name in LISTS}

    # a person edits the sidecar with exiftool: adds a hierarchical keyword, removes "Dog"
    exiftool(
        sidecar,
        "-XMP-dc:Subject+=Sunset", "-XMP-lr:HierarchicalSubject+=Places|Sunset", "-XMP-digiKam:TagsList+=Places/Sunset",
        "-XMP-dc:Subject-=Dog", "-XMP-lr:HierarchicalSubject-=Dog", "-XMP-digiKam:TagsList-=Dog",
    )  # fmt: skip
    report = TaggingService(library, xmp_only).run()
    assert report.xmp_imported == 1 and report.xmp_removed == 1 and report.skipped == []
    with library.session() as session:
        shown = {t.name: (t.state, t.source) for t in tags_of(session, mine)}
        darktable_tags = {t.name: t.source for t in tags_of(session, darktable)}
    assert shown == {"Ünïcödé Straße": ("confirmed", "person"), "Sunset": ("confirmed", "xmp")}
    assert darktable_tags == {"Paris": "xmp"}  # no darktable|format|jpg, no "places" or "France"
    # and pixsearch's next write neither puts "Dog" back nor duplicates what exiftool wrote
    assert exiftool(sidecar) == {  # (exiftool put its addition first)
        "Subject": ["Sunset", "Ünïcödé Straße"],
        "HierarchicalSubject": ["Places|Sunset", "Ünïcödé Straße"],
        "TagsList": ["Places/Sunset", "Ünïcödé Straße"],
    }
    assert TaggingService(library, xmp_only).run().xmp_written == 0  # settled: nothing left to change
