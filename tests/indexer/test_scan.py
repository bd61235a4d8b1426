"""The scan lists what it will not index (links, FIFOs, sockets) instead of passing over it in silence."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from images import draw

from pixsearch.indexer.scan import Entry, Problem, scan


def test_links_and_special_files_are_listed_never_followed(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "album").mkdir(parents=True)
    draw(1).save(folder / "album" / "real.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    draw(2).save(elsewhere / "outside.png")
    os.symlink(elsewhere / "outside.png", folder / "link.png")
    os.symlink(elsewhere, folder / "linked-folder")
    os.symlink(folder / "nowhere.png", folder / "broken.jpg")
    os.symlink(elsewhere / "outside.png", folder / "link-without-extension")  # not a photo name: ignored
    os.mkfifo(folder / "pipe.jpg")
    os.mkfifo(folder / "pipe")  # not a photo name: ignored
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(folder / "socket.png"))
        found = list(scan([folder]))
    entries = sorted(Path(item.path).name for item in found if isinstance(item, Entry))
    problems = {Path(item.path).name: item.reason for item in found if isinstance(item, Problem)}
    assert entries == ["real.png"]
    assert problems == {
        "link.png": "symbolic link: not followed",
        "linked-folder": "symbolic link to a folder: not followed",
        "broken.jpg": "symbolic link: not followed",
        "pipe.jpg": "not a regular file (FIFO)",
        "socket.png": "not a regular file (socket)",
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may make a device file")
def test_device_files_are_listed(tmp_path: Path) -> None:
    try:
        os.mknod(tmp_path / "null.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        pytest.skip("this container may not make device files")
    assert [(Path(p.path).name, p.reason) for p in scan([tmp_path])] == [
        ("null.jpg", "not a regular file (character device)")
    ]
