"""A helper process for the kill fuzz: imports pixsearch and the model code once, then forks one real
process per indexing run, so that each run can be SIGKILLed at any point without paying the import
again. The zygote itself never runs torch (forking after torch has started threads is unsafe).

Protocol: {"ready": true} once imported, then one JSON object per line on stdin, one answer line on stdout:
  {"run": {"library": ..., "folder": ..., "spec": ..., "reindex": bool}}  ->  {"pid": N}
  {"wait": N}                                                          ->  {"exit": code} | {"signal": sig}
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from transformers import CLIPModel  # noqa: F401 - imported once here, before any fork

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.storage import Library


def _child(job: dict) -> None:
    library = Library.open(Path(job["library"]))
    encoder = create(job["spec"])
    options = IndexOptions(workers=0, batch_size=2, reindex=job.get("reindex", False), save_every_s=0.0)
    Indexer(library, encoder, options).run([Path(job["folder"])])


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request:
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    _child(request["run"])
                except BaseException as error:  # noqa: BLE001 - reported through the exit code
                    print(f"zygote child: {type(error).__name__}: {error}", file=sys.stderr)
                    code = 1
                os._exit(code)
            answer = {"pid": pid}
        else:
            _, status = os.waitpid(request["wait"], 0)
            answer = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.WEXITSTATUS(status)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
