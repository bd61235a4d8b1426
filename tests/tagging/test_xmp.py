"""XMP sidecars: written and read back, merged into an existing sidecar, never clobbering it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pixsearch.errors import ConfigError
from pixsearch.tagging.xmp import XmpError, merge_keywords, read_sidecar, sidecar_path, write_sidecar

DARKTABLE = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmp:Rating="4"
    darktable:xmp_version="5">
   <dc:subject><rdf:Bag><rdf:li>Holiday</rdf:li><rdf:li>Beach</rdf:li></rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>Places|Beach</rdf:li></rdf:Bag></lr:hierarchicalSubject>
   <darktable:history><rdf:Seq><rdf:li darktable:operation="exposure" darktable:enabled="1"/></rdf:Seq></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg, and it must stay byte for byte")
    return path


def test_a_new_sidecar_is_written_and_read_back(photo: Path) -> None:
    before = photo.read_bytes(), photo.stat().st_mtime_ns
    update = write_sidecar(photo, ["beach", "dog", "café au lait"])
    assert update.path == photo.with_name("IMG_0001.jpg.xmp") and update.created and update.changed
    assert read_sidecar(update.path).subjects == ["beach", "dog", "café au lait"]
    text = update.path.read_text(encoding="utf-8")
    assert text.startswith("<?xpacket begin=") and "<dc:subject>" in text and "<rdf:Bag>" in text
    assert (photo.read_bytes(), photo.stat().st_mtime_ns) == before  # the photo is never touched
    assert sorted(p.name for p in photo.parent.iterdir()) == ["IMG_0001.jpg", "IMG_0001.jpg.xmp"]  # no temp files


def test_an_existing_sidecar_is_merged_not_clobbered(photo: Path) -> None:
    sidecar = photo.with_name("IMG_0001.jpg.xmp")
    sidecar.write_text(DARKTABLE, encoding="utf-8")
    update = write_sidecar(photo, ["beach", "dog"])
    assert update.added == ["dog"] and update.removed == [] and not update.created
    text = sidecar.read_text(encoding="utf-8")
    for kept in ('xmp:Rating="4"', 'darktable:xmp_version="5"', 'darktable:operation="exposure"', "Places|Beach"):
        assert kept in text
    assert read_sidecar(sidecar).subjects == ["Holiday", "Beach", "dog"]  # "beach" was there as "Beach"
    # a tag removed in pixsearch leaves the sidecar only if pixsearch wrote it; the person's keywords stay
    update = write_sidecar(photo, ["holiday"])
    assert update.removed == ["dog"] and read_sidecar(sidecar).subjects == ["Holiday", "Beach"]
    assert write_sidecar(photo, ["holiday"]).changed is False


def test_lightroom_style_sidecars_are_found(photo: Path) -> None:
    stem = photo.with_suffix(".xmp")
    stem.write_text(DARKTABLE, encoding="utf-8")
    assert sidecar_path(photo) == stem and write_sidecar(photo, ["surf"]).path == stem
    assert "surf" in read_sidecar(stem).subjects
    assert sidecar_path(photo.with_name("other.png"), "stem").name == "other.xmp"
    with pytest.raises(ConfigError, match="naming"):
        sidecar_path(photo, "sideways")


@pytest.mark.parametrize(
    "content, words",
    [
        ("<x:xmpmeta xmlns:x='adobe:ns:meta/'><broken", "not well-formed"),
        ("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>]><a>&lol;</a>", "DOCTYPE"),
        ("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>", "no rdf:RDF"),
    ],
)
def test_a_broken_sidecar_is_left_untouched(photo: Path, content: str, words: str) -> None:
    sidecar = photo.with_name("IMG_0001.jpg.xmp")
    sidecar.write_text(content, encoding="utf-8")
    os.utime(sidecar, ns=(1_000_000_000, 1_000_000_000))
    with pytest.raises(XmpError, match=words):
        write_sidecar(photo, ["dog"])
    assert sidecar.read_text(encoding="utf-8") == content and sidecar.stat().st_mtime_ns == 1_000_000_000


def test_merge_rules() -> None:
    subjects, written, added, removed = merge_keywords(["A", "b", "mine"], {"b", "gone"}, ["a", "b", "new"])
    assert subjects == ["A", "b", "mine", "new"] and added == ["new"] and removed == []
    assert written == ["b", "new"]  # "A" was there before pixsearch: never claimed
    subjects, written, added, removed = merge_keywords(subjects, set(written), ["a"])
    assert subjects == ["A", "mine"] and removed == ["b", "new"] and written == []


def test_a_new_sidecar_follows_the_umask_and_an_old_one_keeps_its_mode(photo: Path) -> None:
    old = os.umask(0o022)
    try:
        created = write_sidecar(photo, ["beach"]).path
        assert os.stat(created).st_mode & 0o777 == 0o644  # like the photo beside it, readable by other tools
        os.chmod(created, 0o600)
        write_sidecar(photo, ["dog"])
        assert os.stat(created).st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
