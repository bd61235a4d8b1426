"""Seeded kill fuzz: indexing runs are SIGKILLed at random moments while the photo folder changes
between runs (new, deleted, moved, edited and copied photos). After every kill a full rerun must
leave every file exactly once, one vector per photo, and an index file holding exactly the stored
vector ids, with no temp files left behind."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from images import draw
from sqlalchemy import select

from pixsearch.storage import IMAGES, Library
from pixsearch.storage.schema import Embedding, ImageRow
from pixsearch.storage.vector_index import VectorIndex

KILLS = 20
SEED = 20261130


class Zygote:
    def __init__(self) -> None:
        script = Path(__file__).with_name("index_zygote.py")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert json.loads(self.process.stdout.readline()) == {"ready": True}

    def ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the zygote died"
        return json.loads(line)

    def run(self, job: dict) -> float:
        """A whole run to its end; returns its wall time."""
        started = time.monotonic()
        pid = self.ask({"run": job})["pid"]
        assert self.ask({"wait": pid}) == {"exit": 0}, "a run without a kill failed"
        return time.monotonic() - started

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def zygote():
    process = Zygote()
    yield process
    process.close()


def _mutate(folder: Path, rng: random.Random, next_seed: list[int]) -> None:
    """A few of each change a real library sees between two runs."""
    photos = sorted(folder.rglob("*.png"))
    for _ in range(rng.randint(0, 4)):  # new photos
        sub = folder / rng.choice(["", "a", "b"])
        sub.mkdir(exist_ok=True)
        draw(next_seed[0]).save(sub / f"new_{next_seed[0]}.png")
        next_seed[0] += 1
    rng.shuffle(photos)
    for path in photos[:2]:  # deleted
        path.unlink()
    for path in photos[2:4]:  # moved
        target = folder / rng.choice(["", "a", "b"]) / f"moved_{next_seed[0]}.png"
        target.parent.mkdir(exist_ok=True)
        path.rename(target)
        next_seed[0] += 1
    for path in photos[4:5]:  # edited in place
        draw(next_seed[0]).save(path)
        next_seed[0] += 1
    for path in photos[5:6]:  # copied
        shutil.copy(path, path.with_name(f"copy_{next_seed[0]}.png"))
        next_seed[0] += 1


def _check(library_root: Path, folder: Path) -> None:
    files = sorted(str(p) for p in folder.rglob("*.png"))
    library = Library.open(library_root)
    try:
        with library.session() as session:
            model = library.active_model(session)
            paths = session.execute(select(ImageRow.path)).scalars().all()
            vectors = session.execute(select(Embedding.image_id, Embedding.id)).all()
            image_ids = session.execute(select(ImageRow.id)).scalars().all()
    finally:
        library.close()
    assert sorted(paths) == files, "every file exactly once"
    assert sorted(image_id for image_id, _ in vectors) == sorted(image_ids), "one vector per photo"
    saved = VectorIndex.load(library.index_path(IMAGES, model.key))
    assert sorted(saved.ids().tolist()) == sorted(vector_id for _, vector_id in vectors), "index ids = rows"
    assert not list((library_root / "index").glob("*.tmp")), "no temp files left"


def test_seeded_kills_never_lose_or_duplicate(tmp_path: Path, clip_spec: str, zygote: Zygote) -> None:
    rng = random.Random(SEED)
    folder, library = tmp_path / "photos", tmp_path / "library"
    folder.mkdir()
    for seed in range(30):
        draw(seed).save(folder / f"img_{seed:03d}.png")
    next_seed = [1000]
    job = {"library": str(library), "folder": str(folder), "spec": clip_spec}

    run_s = zygote.run(job)
    _check(library, folder)

    kills = rounds = 0
    while kills < KILLS:
        rounds += 1
        assert rounds <= 3 * KILLS, f"only {kills} of {rounds} kills landed mid-run"
        _mutate(folder, rng, next_seed)
        pid = zygote.ask({"run": job})["pid"]
        # a random moment of a run about as long as the last whole one (a kill point, not a synchronisation)
        time.sleep(rng.uniform(0.0, 0.95) * run_s)
        os.kill(pid, signal.SIGKILL)
        kills += zygote.ask({"wait": pid}) == {"signal": signal.SIGKILL}
        run_s = zygote.run(job)
        _check(library, folder)
