"""A corpus of hostile files, made by the test: every one is indexed or skipped with a reason, and
the whole `pixsearch index` run (parent and workers) stays within a time and memory bound."""

from __future__ import annotations

import io
import os
import random
import re
import socket
import stat
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_consistent, rows
from images import draw
from PIL import Image
from processes import PeakMemory, index_env, pixsearch_command

from pixsearch.storage import Library
from pixsearch.storage.status import library_status

INDEXED = "indexed"
ANY_REASON = ""  # skipped, for whatever reason the decoder gives
MEMORY_BOUND = 1536 * 2**20  # the indexing process and all its workers, summed
ADDRESS_SPACE_KIB = 8 * 2**20  # ulimit -v: a regression fails with MemoryError instead of swapping the machine
RUN_TIMEOUT_S = 120


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, rows_of_zeros: int | None = None, extra_zeros: int = 0) -> bytes:
    """An 8-bit grayscale PNG of zeros written by hand: the header may promise more than the data holds."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    parts = [compressor.compress(row) for _ in range(height if rows_of_zeros is None else rows_of_zeros)]
    block = bytes(2**20)
    parts += [compressor.compress(block) for _ in range(extra_zeros // len(block))]
    idat = b"".join(parts) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _tiff_bomb() -> bytes:
    """A little-endian TIFF whose one strip of 16 bytes claims 100000 x 100000 pixels."""
    entries = [(256, 4, 100_000), (257, 4, 100_000), (258, 3, 8), (259, 3, 1), (262, 3, 1)]
    entries += [(273, 4, 8 + 2 + 12 * 9 + 4), (277, 3, 1), (278, 4, 100_000), (279, 4, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", t, k, 1, v) for t, k, v in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(16)


def _gif_of_broken_frames(frames: int) -> bytes:
    """An 8x8 GIF with `frames` frames of garbage LZW data."""
    head = b"GIF89a" + struct.pack("<HHBBB", 8, 8, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = (
        b","
        + struct.pack("<HHHHB", 0, 0, 8, 8, 0)
        + b"\x02"
        + b"\x05"
        + bytes([0xFF, 0x13, 0x77, 0x00, 0xAB])
        + b"\x00"
    )
    return head + frame * frames + b";"


def _jpeg_with_bogus_size(seed: int) -> bytes:
    data = bytearray(_encoded(draw(seed, (64, 48)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def _jpeg_with_corrupt_exif(seed: int) -> bytes:
    data = _encoded(draw(seed, (64, 48)), "JPEG")
    payload = b"Exif\x00\x00II*\x00" + struct.pack("<I", 0xFFFFFF00) + os.urandom(64)
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def _rotated_jpeg(seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 8  # orientation: rotate 90 clockwise to view
    return _encoded(draw(seed, (80, 40)), "JPEG", exif=exif.tobytes())


def _many_pages_tiff() -> bytes:
    pages = [draw(seed, (32, 24)) for seed in range(300)]
    return _encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def make_hostile_corpus(folder: Path) -> dict[str, str]:
    """Write one file of each hostile kind into `folder`; returns the name as the library records it ->
    INDEXED, or a phrase its skip reason must contain (ANY_REASON: any reason will do)."""
    folder.mkdir(parents=True)
    rng = random.Random(7)
    files: dict[str, tuple[bytes, str]] = {
        "empty.jpg": (b"", "empty file"),
        "truncated.jpg": (_encoded(draw(1, (160, 120)), "JPEG")[:600], "truncated"),
        "truncated.png": (_encoded(draw(2, (160, 120)), "PNG")[:300], ANY_REASON),
        "line-100000x1.png": (_png(100_000, 1), "aspect ratio 100000:1 too extreme"),
        "column-1x100000.png": (_png(1, 100_000), "aspect ratio 1:100000 too extreme"),
        "panorama-10x1.jpg": (_encoded(draw(3, (3000, 300)), "JPEG"), INDEXED),
        "bomb-50000x50000.png": (_png(50_000, 50_000, rows_of_zeros=4), "bomb"),
        "over-limit-12000x12000.png": (_png(12_000, 12_000, rows_of_zeros=4), "over the limit"),
        "deflate-bomb-8000x8000.png": (_png(8000, 8000), INDEXED),  # 64 MP of zeros in ~70 kB
        "huge-idat.png": (_png(500, 500, extra_zeros=64 * 2**20), INDEXED),  # data long past the image's end
        "jpeg-claims-65000x65000.jpg": (_jpeg_with_bogus_size(4), "bomb"),
        "tiff-bomb.tif": (_tiff_bomb(), "bomb"),
        "broken-10000-frames.gif": (_gif_of_broken_frames(10_000), ANY_REASON),
        "animated.webp": (_encoded(draw(5), "WEBP", save_all=True, append_images=[draw(6), draw(7)]), INDEXED),
        "300-pages.tiff": (_many_pages_tiff(), INDEXED),
        "one-pixel.png": (_encoded(Image.new("RGB", (1, 1), "red"), "PNG"), INDEXED),
        "cmyk.jpg": (_encoded(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG"), INDEXED),
        "corrupt-exif.jpg": (_jpeg_with_corrupt_exif(8), INDEXED),
        "orientation-8.jpg": (_rotated_jpeg(9), INDEXED),
        "bogus-header.bmp": (b"BM" + struct.pack("<IHHII", 70, 0, 0, 54, 12345) + bytes(56), ANY_REASON),
        "text.jpg": (b"these are my notes, not a picture\n" * 20, "not an image"),
        "page.png": (b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", "not an image"),
        "drawing.png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9e9" height="9e9"/>', "not an image"),
        "random.jpg": (bytes(rng.randrange(256) for _ in range(4096)), "not an image"),
        "png-named.jpg": (_encoded(draw(10), "PNG"), INDEXED),
        "new\nline.png": (_encoded(draw(11), "PNG"), INDEXED),
        "no-permission.png": (_encoded(draw(12), "PNG"), INDEXED if os.geteuid() == 0 else "permission denied"),
    }
    sixteen = np.linspace(0, 65535, 64 * 48, dtype=np.uint16).reshape(48, 64)
    files["sixteen-bit.png"] = (_encoded(Image.fromarray(sixteen), "PNG"), INDEXED)
    palette = draw(13).convert("P")
    files["palette-transparent.png"] = (_encoded(palette, "PNG", transparency=0), INDEXED)
    files["gray-alpha.png"] = (_encoded(draw(14).convert("LA"), "PNG"), INDEXED)
    expected = {}
    for name, (data, outcome) in files.items():
        (folder / name).write_bytes(data)
        expected[name] = outcome
    (folder / "no-permission.png").chmod(0)

    with open(os.fsencode(folder) + b"/bad-\xff\xfe-name.png", "wb") as handle:
        handle.write(_encoded(draw(15), "PNG"))
    expected["bad-\\xff\\xfe-name.png"] = "not valid UTF-8"
    with open(folder / "sparse-2GiB.jpg", "wb") as handle:
        os.truncate(handle.fileno(), 2 * 2**30)  # costs no disk
    expected["sparse-2GiB.jpg"] = "over the limit"
    os.mkfifo(folder / "fifo.jpg")
    expected["fifo.jpg"] = "not a regular file (FIFO)"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(folder / "socket.png"))
    expected["socket.png"] = "not a regular file (socket)"
    try:
        os.mknod(folder / "zero-device.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
        expected["zero-device.jpg"] = "not a regular file (character device)"
    except PermissionError:
        os.symlink("/dev/zero", folder / "zero-device.jpg")
        expected["zero-device.jpg"] = "symbolic link: not followed"
    os.symlink("/etc/passwd", folder / "passwd.jpg")
    expected["passwd.jpg"] = "symbolic link: not followed"
    os.symlink("/etc", folder / "linked-folder")
    expected["linked-folder"] = "symbolic link to a folder: not followed"
    os.symlink(folder / "nowhere.jpg", folder / "broken-link.jpg")
    expected["broken-link.jpg"] = "symbolic link: not followed"
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")
    expected["loop.jpg"] = "symbolic link: not followed"
    return expected


def _run_index(command: list[str], env: dict[str, str]) -> tuple[int, str, float, PeakMemory]:
    """Run `command` under an address-space limit; (exit code, stdout, seconds, peaks of it and its workers)."""
    shell = f'ulimit -v {ADDRESS_SPACE_KIB} && exec "$@"'
    started = time.monotonic()
    process = subprocess.Popen(
        ["sh", "-c", shell, "sh", *command], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    with PeakMemory(process.pid) as memory:
        try:
            out, _ = process.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
            pytest.fail(f"indexing did not finish in {RUN_TIMEOUT_S}s:\n{out.decode(errors='replace')[-3000:]}")
    return process.returncode, out.decode(errors="replace"), time.monotonic() - started, memory


def test_hostile_corpus_is_indexed_or_skipped_within_bounds(tmp_path: Path, clip_spec: str) -> None:
    folder = tmp_path / "photos"
    expected = make_hostile_corpus(folder)
    assert len(expected) >= 25
    library = tmp_path / "library"
    command = pixsearch_command() + ["index", str(folder), "--model", clip_spec, "--workers", "2", "--batch-size", "4"]
    code, out, seconds, memory = _run_index(command, index_env(library))
    assert code == 0, out[-3000:]

    opened = Library.open(library)
    indexed = {Path(path).name for path in rows(opened)}
    skipped = {Path(path).name: reason for path, reason in library_status(opened).skipped}
    outcomes = {name: INDEXED if name in indexed else skipped.get(name, "NEITHER") for name in expected}
    assert set(indexed) | set(skipped) == set(expected), (set(indexed) | set(skipped)) ^ set(expected)
    wrong = {
        name: (want, got)
        for name, want in expected.items()
        if (got := outcomes[name]) == "NEITHER" or (got == INDEXED) != (want == INDEXED) or want not in got
    }
    assert not wrong, "\n".join(f"{name!r}: wanted {want!r}, got {got!r}" for name, (want, got) in wrong.items())
    assert_consistent(opened)
    assert re.search(rf"\b{len(indexed)} embedded\b", out), out[-2000:]

    total = sum(memory.peaks.values())
    peaks = ", ".join(f"{peak / 2**20:.0f}" for peak in memory.peaks.values())
    print(f"\n{seconds:.1f}s; peak RSS summed over {len(memory.peaks)} processes: {total / 2**20:.0f} MiB ({peaks})")
    print("\n".join(f"  {name!r}: {outcome}" for name, outcome in sorted(outcomes.items())))
    assert total < MEMORY_BOUND, {pid: peak // 2**20 for pid, peak in memory.peaks.items()}
