"""Text in photos: RapidOCR reads a generated image with known text; the service stores it searchably."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFont

from pixsearch.storage import keywords
from pixsearch.storage.annotations import ocr_text_of, tags_of
from pixsearch.tagging.ocr import OcrReader
from pixsearch.tagging.service import TaggingService, TagOptions

pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is not installed")


def sign(lines: list[str], size: tuple[int, int] = (640, 220)) -> Image.Image:
    """Big black text on white, in the font that ships with Pillow (FreeType)."""
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=56)
    for number, line in enumerate(lines):
        pen.text((24, 24 + 90 * number), line, fill="black", font=font)
    return image


@pytest.fixture(scope="module")
def reader() -> OcrReader:
    reader = OcrReader()
    reader.load()
    return reader


def test_reads_known_text_top_to_bottom(reader: OcrReader) -> None:
    result = reader.read(sign(["HELLO WORLD", "Exit 24"]))
    # the recogniser may drop the space of a wide gap; the letters and the line order must be exact
    assert [line.text.replace(" ", "") for line in result.lines] == ["HELLOWORLD", "Exit24"]
    assert result.text.count("\n") == 1 and result.score > 0.8
    assert result.lines[0].box[0][1] < result.lines[1].box[0][1]


def test_a_blank_photo_has_no_text(reader: OcrReader) -> None:
    result = reader.read(Image.new("RGB", (300, 200), "skyblue"))
    assert result.lines == () and result.text == "" and result.score == 0.0


def test_the_service_stores_text_and_makes_it_searchable(library_copy, reader: OcrReader) -> None:
    library, photos = library_copy()
    sign(["PIXSEARCH 2024"]).save(photos / "img_0003.png")  # replace one photo's file by a sign
    TaggingService(library, TagOptions(zero_shot=False, ocr=True), ocr=reader).run()
    with library.session() as session:
        found = keywords.search(session, keywords.KeywordQuery(include=("pixsearch",)), 5)
        assert [image_id for image_id, _ in found] == [4]
        assert ocr_text_of(session, 4) == "PIXSEARCH 2024" and ocr_text_of(session, 1) == ""
        assert [(t.name, t.source) for t in tags_of(session, 4)] == [("text", "ocr")]
        assert tags_of(session, 1) == []
