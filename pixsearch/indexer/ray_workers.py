"""What runs on Ray workers: the photo read (`PhotoSource`) and the model actor (`EmbedActor`).

Imported only where Ray is installed (by `ray_job.embed_to_shards`, and by the workers that
unpickle these classes). Rows travel as Arrow tables: the file's facts, a `reason` for a file that
failed, and the pixels (after the read) or the vector (after the model) as float32 bytes.
"""

from __future__ import annotations

import functools
import math
import socket
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from pixsearch.errors import ModelMismatchError
from pixsearch.indexer.decode import DecodeOptions, Failure, Prepared, prepare

_FACTS = ("content_hash", "size", "mtime", "width", "height", "taken_at", "camera")


def schema(payload: str) -> pa.Schema:
    """The rows' schema; `payload` is "pixels" (float32[3, H, W]) or "vector" (float32[d])."""
    return pa.schema(
        [
            ("path", pa.string()),
            ("reason", pa.string()),  # set for a file that failed: the rest of its row is empty
            ("content_hash", pa.string()),
            ("size", pa.int64()),
            ("mtime", pa.float64()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("taken_at", pa.string()),  # ISO text: exactly the datetime a local run stores
            ("camera", pa.string()),
            (payload, pa.binary()),
        ]
    )


def decoded_table(results: Sequence[Prepared | Failure]) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in schema("pixels").names}
    for result in results:
        failed = isinstance(result, Failure)
        columns["path"].append(result.path)
        columns["reason"].append(result.reason if failed else None)
        for name in _FACTS:
            value = None if failed else getattr(result, name)
            columns[name].append(value.isoformat() if name == "taken_at" and value else value)
        columns["pixels"].append(None if failed else np.ascontiguousarray(result.pixels, np.float32).tobytes())
    return pa.table(columns, schema=schema("pixels"))


def _read(paths: Sequence[str], decode: DecodeOptions, rows: int) -> Iterator[pa.Table]:
    """One read task: open, check, hash and decode `paths` as a local run does, `rows` files a table."""
    for start in range(0, len(paths), rows):
        yield decoded_table([prepare(path, decode) for path in paths[start : start + rows]])


class PhotoSource(Datasource):
    """Photo files, split into read tasks of consecutive paths."""

    def __init__(self, paths: list[str], decode: DecodeOptions, rows_per_block: int) -> None:
        super().__init__()
        self.paths, self.decode, self.rows = paths, decode, rows_per_block

    def _bytes(self, count: int) -> int:
        return count * 3 * self.decode.transform.size**2 * 4

    def estimate_inmemory_data_size(self) -> int:
        return self._bytes(len(self.paths))

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list:
        count = max(1, min(parallelism, math.ceil(len(self.paths) / self.rows)))
        tasks = []
        for chunk in np.array_split(np.arange(len(self.paths)), count):
            paths = [self.paths[i] for i in chunk]
            metadata = BlockMetadata(
                num_rows=len(paths), size_bytes=self._bytes(len(paths)), input_files=None, exec_stats=None
            )
            read = functools.partial(_read, paths, self.decode, self.rows)
            tasks.append(ReadTask(read, metadata, per_task_row_limit=per_task_row_limit))
        return tasks


class EmbedActor:
    """Holds the model; each call embeds one table of decoded rows (failed files pass through)."""

    def __init__(self, job, model, threads: int) -> None:
        import torch
        import transformers

        from pixsearch.models import Role, Tower, create
        from pixsearch.storage.library import model_key

        torch.set_num_threads(threads)
        # a worker's log goes to the driver's terminal: no load reports or bars (a bad checkpoint still raises)
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        self.encoder = create(job.spec, Role.DUAL_ENCODER, model)
        self.encoder.load_towers(Tower.IMAGE)
        key = model_key(job.spec, self.encoder.preprocess_id)
        if key != job.model_key or self.encoder.dim != job.dim:
            raise ModelMismatchError(
                f"on {socket.gethostname()}, {job.spec} loads as a {self.encoder.dim}-d model with preprocessing "
                f"{self.encoder.preprocess_id}; the driver's is {job.dim}-d (model key {job.model_key}): "
                "every node must see the same model files"
            )
        size = job.decode.transform.size
        self.shape = (3, size, size)

    def __call__(self, table: pa.Table) -> pa.Table:
        import torch

        blobs = table.column("pixels").to_pylist()
        good = [i for i, blob in enumerate(blobs) if blob is not None]
        vectors: list[bytes | None] = [None] * len(blobs)
        if good:
            pixels = np.stack([np.frombuffer(blobs[i], dtype=np.float32).reshape(self.shape) for i in good])
            with torch.inference_mode():
                embedded = self.encoder.encode_pixels(pixels)
            for i, vector in zip(good, embedded, strict=True):
                vectors[i] = vector.tobytes()
        return table.drop_columns(["pixels"]).append_column("vector", pa.array(vectors, pa.binary()))
