"""Turning evaluation results into a table (a string: the CLI prints it) and a JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def rows(results: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested results into (name, value) rows; lists (examples) are left out of the table."""
    out: list[tuple[str, str]] = []
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(rows(value, f"{name} "))
        elif isinstance(value, float):
            out.append((name, f"{value * 100:.2f}" if _is_share(key) else f"{value:.4f}"))
        elif not isinstance(value, list):
            out.append((name, str(value)))
    return out


def _is_share(key: str) -> bool:
    return (
        key.startswith("R@")
        or key in {"vqa_accuracy", "ve_accuracy", "written_accuracy", "top_k_oracle", "bleu4"}
        or key.startswith("chance")
    )


def format_table(results: dict[str, Any], title: str = "evaluation") -> str:
    """A two-column text table; recalls, accuracies and BLEU in percent."""
    table = rows(results)
    width = max((len(name) for name, _ in table), default=10)
    lines = [title, "-" * (width + 12)]
    lines += [f"{name:<{width}}  {value:>9}" for name, value in table]
    return "\n".join(lines)


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Write the results (raw values, not percent) to `path` as JSON, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
