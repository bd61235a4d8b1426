"""How long `pixsearch --help` (and a sub-command's help) takes, against a baseline measured in the
same run: starting Python and doing nothing (`python -c pass`). Each is a fresh subprocess, run
`--repeat` times; the median is reported, with the ratio to the baseline.

    python bench/cli_help.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys

from common import Timer, statistics

CASES = {
    "python -c pass": ["-c", "pass"],
    "pixsearch --help": ["-m", "pixsearch.cli", "--help"],
    "pixsearch search --help": ["-m", "pixsearch.cli", "search", "--help"],
    "pixsearch tag --help": ["-m", "pixsearch.cli", "tag", "--help"],
}


def seconds(args: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        with Timer() as timer:
            subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
        times.append(timer.seconds)
    return statistics.median(times)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{cpu_model()}, Python {platform.python_version()}, median of {args.repeat}")
    baseline = seconds(CASES["python -c pass"], args.repeat)
    for name, command in CASES.items():
        took = baseline if name == "python -c pass" else seconds(command, args.repeat)
        print(f"{name:26s} {took * 1000:8.1f} ms  {took / baseline:6.1f}x baseline")


if __name__ == "__main__":
    main()
