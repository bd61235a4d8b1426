"""Indexing throughput of a local run against `--ray local` on the same folder, in one run.

Both are real `pixsearch index` processes over the same JPEGs with the same CLIP ViT-B/32 (real
config, random weights); each starts cold (the Ray run starts its own one-machine cluster, so its
figure includes Ray's start-up: what a user of `--ray local` waits for). Prints images/s from each
run's own report, the wall time of each process, and the ratio. Needs `pip install "pixsearch[ray]"`.

    python bench/ray_index.py [--count 96] [--size 1600x1200]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Timer, save_vit_b32_clip
from index_throughput import make_photo


def index(photos: Path, library: Path, spec: str, extra: list[str]) -> tuple[float, float, str]:
    """(images/s as the run reports it, wall seconds of the process, the summary line)."""
    command = [sys.executable, "-m", "pixsearch.cli", "index", str(photos), "--library", str(library)]
    command += ["--model", spec, *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with Timer() as timer:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    summary = done.stdout.splitlines()[0]
    rate = float(re.search(r"\(([\d.]+) images/s\)", summary).group(1))
    return rate, timer.seconds, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=96)
    parser.add_argument("--size", default="1600x1200")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="pixsearch-bench-ray-"))
    photos = work / "photos"
    photos.mkdir()
    for i in range(args.count):
        make_photo(i, size, photos / f"photo_{i:04d}.jpg")
    spec = f"clip:{save_vit_b32_clip(work / 'vit-b32')}"
    print(f"{args.count} JPEGs of {size[0]}x{size[1]}, CLIP ViT-B/32 (random weights), {os.cpu_count()} cores")
    local_rate, local_wall, local_line = index(photos, work / "local", spec, [])
    ray_rate, ray_wall, ray_line = index(photos, work / "ray", spec, ["--ray", "local"])
    print(f"local run:     {local_rate:7.2f} images/s, process {local_wall:6.1f} s   ({local_line})")
    print(f"--ray local:   {ray_rate:7.2f} images/s, process {ray_wall:6.1f} s   ({ray_line})")
    print(f"ratio (ray / local): {ray_rate / local_rate:.2f}x images/s, {local_wall / ray_wall:.2f}x wall time")


if __name__ == "__main__":
    main()
