"""Wall time from `pixsearch demo` starting to its server answering `/api/health`, against a baseline
measured in the same run: starting Python and importing the CLI (`python -c "import pixsearch.cli"`).

Two demo starts, each a subprocess on a free port: "cold" in an empty folder (photos generated, library
indexed) and "warm" in the same folder again (both reused). Prints seconds and the ratio to the baseline.

    python bench/demo_start.py [--threads N] [--timeout 300]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from common import Timer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def baseline() -> float:
    with Timer() as timer:
        subprocess.run([sys.executable, "-c", "import pixsearch.cli"], check=True)
    return timer.seconds


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def demo_start(folder: Path, threads: int | None, timeout: float) -> tuple[float, str]:
    """Seconds from starting `pixsearch demo` to /api/health answering 200, and the demo's first line."""
    port = free_port()
    script = Path(sys.executable).with_name("pixsearch")  # the console script, as a user runs it
    launcher = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import sys; from pixsearch.cli import main; sys.exit(main())"]
    )
    command = [*launcher, "demo", "--dir", str(folder), "--port", str(port)]
    command += ["--threads", str(threads)] if threads else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = folder.parent / f"{folder.name}-{port}.log"
    with open(log, "w+") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        try:
            while not answers(f"http://127.0.0.1:{port}/api/health"):
                if process.poll() is not None:
                    raise RuntimeError(f"pixsearch demo exited with {process.returncode}; see {log}")
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"pixsearch demo did not answer within {timeout:.0f}s; see {log}")
                time.sleep(0.1)  # polling a server in another process: there is nothing to wait on
            seconds = time.perf_counter() - started
        finally:
            process.terminate()
            process.wait(timeout=30)
        output.seek(0)
        first = output.readline().strip()
    return seconds, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, help="torch threads for the demo (default: torch's)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    base = baseline()
    with tempfile.TemporaryDirectory(prefix="pixsearch-demo-bench-") as temp:
        folder = Path(temp) / "demo"
        cold, first = demo_start(folder, args.threads, args.timeout)
        warm, _ = demo_start(folder, args.threads, args.timeout)
    print(f"first line: {first}")
    print(f"baseline (python -c 'import pixsearch.cli'): {base:6.2f} s")
    print(f"pixsearch demo, cold (generate + index):     {cold:6.2f} s  ({cold / base:.0f}x baseline)")
    print(f"pixsearch demo, warm (reuse):                {warm:6.2f} s  ({warm / base:.0f}x baseline)")


if __name__ == "__main__":
    main()
