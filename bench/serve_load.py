"""The web API under concurrent clients, at several library sizes.

For each size: a library of that many photos (bulk-written, see synthetic_library.py; indexed with
the `auto` choice, so exact at 10k and IVF-PQ at 1M), a CLIP ViT-B/32 with random weights (real
encoding cost), and `pixsearch serve` started in its own process on loopback. Then, for each kind
of request in turn, --clients threads send requests for --seconds (at most --requests each kind):
word queries (GET /api/search), photo queries (POST /api/search with a JPEG) and clip-retrieval's
POST /knn-service (an embedding, with deduplication). Prints throughput, p50/p99 latency and the
error count (any answer but 200 is an error; the run fails if there is one).

    python bench/serve_load.py                      # 10,000 and 1,000,000 photos
    python bench/serve_load.py --sizes 10000 --seconds 10
    python bench/serve_load.py --library DIR        # a library kept by bench/ann.py --keep
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from common import percentile, save_vit_b32_clip

# isort: split
from ann import WORDS
from clustered import clustered
from PIL import Image
from synthetic_library import build_index, build_library


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


class Server:
    """`pixsearch serve` on a library, in a child process."""

    def __init__(self, library: Path) -> None:
        self.port = _free_port()
        env = {**os.environ, "PIXSEARCH_LIBRARY": str(library), "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-c", "import sys; from pixsearch.cli import main; sys.exit(main())", "serve"]
        command += ["--port", str(self.port)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, timeout_s: float = 300.0) -> int:
        """Wait until the server answers; returns how many photos it serves."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                response = httpx.get(f"{self.url}/api/health", timeout=30)
                if response.status_code == 200:
                    return int(response.json()["images"])
            except httpx.TransportError:
                time.sleep(0.5)
        raise RuntimeError("the server did not answer in time")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def requests_of(kind: str, dim: int):
    """A function i -> (method, path, keyword arguments for httpx) for one kind of request."""
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((64, dim)).astype(np.float32)
    images = [_jpeg(seed) for seed in range(8)]
    if kind == "words":
        return lambda i: ("GET", "/api/search", {"params": {"q": WORDS[i % len(WORDS)], "k": 10}})
    if kind == "photo":
        return lambda i: ("POST", "/api/search", {"files": {"image": ("q.jpg", images[i % 8], "image/jpeg")}})
    body = lambda i: {"embedding_input": embeddings[i % 64].tolist(), "num_images": 10, "deduplicate": True}  # noqa: E731
    return lambda i: ("POST", "/knn-service", {"json": body(i)})


def load(url: str, make, clients: int, seconds: float, limit: int) -> tuple[list[float], int, float]:
    """Send requests from `clients` threads until `seconds` pass or `limit` are sent: (latencies, errors, wall)."""
    times: list[float] = []
    errors: list[str] = []
    counter = iter(range(limit))
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                method, path, kwargs = make(i)
                start = time.perf_counter()
                response = http.request(method, path, **kwargs)
                elapsed = time.perf_counter() - start
                with lock:
                    times.append(elapsed)
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors[:3]:
        print(f"    error: {error}")
    return times, len(errors), time.perf_counter() - started


def measure(library: Path, args: argparse.Namespace) -> int:
    server = Server(library)
    failures = 0
    try:
        size = server.wait()
        for kind in ("words", "photo", "knn"):
            make = requests_of(kind, 512)
            load(server.url, make, 1, 600, 2)  # warm-up: the index is opened, the towers loaded
            times, errors, wall = load(server.url, make, args.clients, args.seconds, args.requests)
            failures += errors
            print(
                f"{size:>9} photos  {kind:<6} {len(times):5d} requests from {args.clients} clients in {wall:5.1f}s: "
                f"{len(times) / wall:6.1f}/s  p50 {percentile(times, 50) * 1e3:7.1f} ms  "
                f"p99 {percentile(times, 99) * 1e3:7.1f} ms  errors {errors}",
                flush=True,
            )
    finally:
        server.stop()
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,1000000", help="library sizes (comma-separated)")
    parser.add_argument("--library", type=Path, help="use this library instead of building them")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each kind of request is sent")
    parser.add_argument("--requests", type=int, default=400, help="at most this many requests of each kind")
    parser.add_argument("--workdir", help="where the temp libraries go (default: the system temp folder)")
    args = parser.parse_args()
    failures = 0
    if args.library:
        return 1 if measure(args.library, args) else 0
    work = Path(tempfile.mkdtemp(prefix="pixsearch-load-", dir=args.workdir))
    try:
        from pixsearch.models import create

        spec = f"clip:{save_vit_b32_clip(work / 'clip')}"
        preprocess_id = create(spec).preprocess_id
        for size in (int(s) for s in args.sizes.split(",")):
            started = time.perf_counter()
            library = build_library(work / f"library-{size}", clustered(size, 512).vectors, spec, preprocess_id)
            build_index(library, "auto")
            library.close()
            print(f"library of {size} photos built in {time.perf_counter() - started:.0f}s", flush=True)
            failures += measure(library.root, args)
            shutil.rmtree(library.root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
