"""The date a photo was taken: EXIF DateTimeOriginal, then DateTimeDigitized (CreateDate), then the XMP
dates of a sidecar or of the file itself, and last EXIF DateTime (the file's modification)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from conftest import run_index
from images import draw
from PIL import Image, PngImagePlugin

from pixsearch.indexer.decode import DecodeOptions, Failure, prepare
from pixsearch.models.preprocess import ImageTransform
from pixsearch.storage.schema import ImageRow
from pixsearch.xmpdoc import parse_xmp_date

ORIGINAL, DIGITIZED, MODIFIED = 0x9003, 0x9004, 0x0132
EXIF_IFD = 0x8769


def packet(body: str) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'{body}</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


ATTRIBUTE_FORM = packet(
    '<rdf:Description rdf:about="" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
    'photoshop:DateCreated="2018-02-03T04:05:06+01:00"/>'
)
ELEMENT_FORM = packet(
    '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
    "<xmp:CreateDate>2019-03-04T05:06:07.25Z</xmp:CreateDate></rdf:Description>"
)


def jpeg(path: Path, xmp: bytes | None = None, **dates: str) -> Path:
    """A JPEG with the EXIF dates given by name (original, digitized, modified) and optional embedded XMP."""
    exif = Image.Exif()
    tags = {"original": ORIGINAL, "digitized": DIGITIZED, "modified": MODIFIED}
    for name, value in dates.items():
        if tags[name] == MODIFIED:
            exif[MODIFIED] = value
        else:
            exif.get_ifd(EXIF_IFD)[tags[name]] = value
    extra = {"xmp": xmp} if xmp else {}
    draw(3, (40, 30)).save(path, "JPEG", exif=exif.tobytes(), **extra)
    return path


def taken(path: Path) -> datetime | None:
    prepared = prepare(str(path), DecodeOptions(ImageTransform(size=16)))
    assert not isinstance(prepared, Failure), prepared
    return prepared.taken_at


def test_exif_dates_in_order(tmp_path: Path) -> None:
    every = jpeg(
        tmp_path / "a.jpg",
        original="2020:01:02 03:04:05",
        digitized="2020:01:02 03:04:06",
        modified="2024:05:06 07:08:09",
    )
    assert taken(every) == datetime(2020, 1, 2, 3, 4, 5)
    digitized_only = jpeg(tmp_path / "b.jpg", digitized="2021:06:15 10:30:00")
    assert taken(digitized_only) == datetime(2021, 6, 15, 10, 30)  # was: no date at all
    blank_original = jpeg(tmp_path / "c.jpg", original="    :  :     :  :  ", digitized="2021:06:15 10:30:00")
    assert taken(blank_original) == datetime(2021, 6, 15, 10, 30)
    assert taken(jpeg(tmp_path / "d.jpg", modified="2024:05:06 07:08:09")) == datetime(2024, 5, 6, 7, 8, 9)
    assert taken(jpeg(tmp_path / "e.jpg")) is None


def test_embedded_xmp_in_jpeg_and_png(tmp_path: Path) -> None:
    assert taken(jpeg(tmp_path / "a.jpg", xmp=ATTRIBUTE_FORM)) == datetime(2018, 2, 3, 4, 5, 6)
    # EXIF DateTime is when the file was last changed: an XMP creation date comes first
    assert taken(jpeg(tmp_path / "b.jpg", xmp=ELEMENT_FORM, modified="2024:05:06 07:08:09")) == datetime(
        2019, 3, 4, 5, 6, 7
    )
    # ... but the camera's own capture date comes before both
    assert taken(jpeg(tmp_path / "c.jpg", xmp=ELEMENT_FORM, digitized="2021:06:15 10:30:00")) == datetime(
        2021, 6, 15, 10, 30
    )
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", ELEMENT_FORM.decode())
    draw(4, (40, 30)).save(tmp_path / "d.png", "PNG", pnginfo=info)
    assert taken(tmp_path / "d.png") == datetime(2019, 3, 4, 5, 6, 7)


@pytest.mark.parametrize("name", ["a.jpg.xmp", "a.xmp"])
def test_a_sidecar_date(tmp_path: Path, name: str) -> None:
    photo = jpeg(tmp_path / "a.jpg", xmp=ELEMENT_FORM, modified="2024:05:06 07:08:09")
    (tmp_path / name).write_bytes(ATTRIBUTE_FORM)
    assert taken(photo) == datetime(2018, 2, 3, 4, 5, 6)  # the sidecar's date over the file's own XMP


def test_a_broken_or_linked_sidecar_gives_no_date_and_no_failure(tmp_path: Path) -> None:
    photo = jpeg(tmp_path / "a.jpg")
    (tmp_path / "a.jpg.xmp").write_text("<x:xmpmeta not well formed", encoding="utf-8")
    assert taken(photo) is None
    (tmp_path / "a.jpg.xmp").unlink()
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere.xmp"
    elsewhere.write_bytes(ATTRIBUTE_FORM)
    (tmp_path / "a.jpg.xmp").symlink_to(elsewhere)
    assert taken(photo) is None  # sidecars are read like photos: never through a link


def test_the_indexer_stores_it(library, encoder, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    jpeg(folder / "digitized.jpg", digitized="2021:06:15 10:30:00")
    run_index(library, encoder, folder)
    with library.session() as session:
        assert session.query(ImageRow.taken_at).scalar() == datetime(2021, 6, 15, 10, 30)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-06-15T10:30:00+02:00", datetime(2021, 6, 15, 10, 30)),
        ("2021-06-15T10:30", datetime(2021, 6, 15, 10, 30)),
        ("2021-06-15", datetime(2021, 6, 15)),
        ("2021-06", datetime(2021, 6, 1)),
        ("2021", datetime(2021, 1, 1)),
        ("2021:06:15 10:30:00", datetime(2021, 6, 15, 10, 30)),
        ("2021-13-40", None),
        ("yesterday", None),
    ],
)
def test_xmp_date_forms(text: str, expected: datetime | None) -> None:
    assert parse_xmp_date(text) == expected
