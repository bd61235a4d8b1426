"""Decoding and embedding as a Ray Data job, for libraries too large for one machine's cores.

    read (PhotoSource: read tasks open, hash and decode files with `decode.prepare`)
      -> map_batches(EmbedActor, a fixed pool of actors holding the model, one GPU each where there are GPUs)
      -> back to the driver, which writes each result batch as a shard (`indexer.shards`) and merges it

Only decoding and embedding leave the driver: scanning, hashing, the diff, moves and deletions, and
every database write stay in `indexer.run`, under the library's writer lock. Workers read photos
through the same checks as a local run (`decode.prepare`: below the indexed folders, through no
link, size and pixel limits), so every node must see the photos at the same paths, and the model
spec must load on every node (a hub id in each node's cache, or a folder on shared storage).

Ray is optional: this module imports it only when a job runs.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from pixsearch.errors import ClusterError, ConfigError, PixsearchError
from pixsearch.indexer import shards
from pixsearch.indexer.decode import DecodeOptions, Failure, PhotoFacts
from pixsearch.models.spec import ModelOptions

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "pixsearch[ray]"'


@dataclass(frozen=True)
class RayOptions:
    """Where and how a Ray job runs.

    address: "auto" (the cluster this machine belongs to), "local" (start one here for this run),
        "ray://HOST:PORT" (Ray Client) or "HOST:PORT" (a cluster's GCS address).
    actors: how many model actors; None: one per GPU, or half the CPUs on a cluster without GPUs.
    model: device and dtype in the actors ("auto": the actor's GPU in float16 when it has one).
    """

    address: str = "auto"
    actors: int | None = None
    model: ModelOptions = field(default_factory=ModelOptions)

    def __post_init__(self) -> None:
        if not self.address.strip():
            raise ConfigError("--ray needs an address: auto, local, ray://HOST:PORT or HOST:PORT")
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"--ray-actors must be at least 1, got {self.actors}")


@dataclass(frozen=True)
class EmbedJob:
    """What the workers need to know; travels to them pickled."""

    spec: str
    model_key: str  # the driver's (spec, preprocessing) key: an actor whose model differs refuses to run
    dim: int
    decode: DecodeOptions
    batch_size: int


@dataclass(frozen=True)
class Plan:
    actors: int
    gpus_per_actor: float
    cpus_per_actor: int


def require_ray() -> Any:
    """The `ray` module with Ray Data, or a ConfigError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra "ray[data]" brings it
    except ImportError as error:
        raise ConfigError(f"--ray needs Ray Data, which is not installed ({error}); {INSTALL_HINT}") from None
    return ray


def plan(resources: Mapping[str, float], actors: int | None) -> Plan:
    """How many actors, and what each holds, on a cluster with these total resources."""
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if gpus:
        count = actors or gpus
        return Plan(count, min(1.0, gpus / count), 1)
    # without GPUs the model is the slow step: half the CPUs embed, the other half read and decode
    return Plan(actors or max(1, cpus // 2), 0.0, 1)


@contextmanager
def connected(address: str) -> Iterator[Any]:
    """This process joined to a Ray cluster for the block; one it was already joined to is kept joined."""
    ray = require_ray()
    if ray.is_initialized():  # the caller (an application, a test) manages its own connection
        log.info("using this process's Ray connection, not %r", address)
        yield ray
        return
    try:
        join_cluster(ray, address)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise ClusterError(
            f"cannot join the Ray cluster at {address!r}: {str(error).rstrip('.')}. Start one with `ray start --head`, "
            "or pass --ray local to run one on this machine for this run"
        ) from error
    try:
        yield ray
    finally:
        ray.shutdown()


# Ray Client's proxy starts one server process per client, and in about 1 join of 10 (Ray 2.60 on
# 2-core machines: 4 of some 40 joins) that process dies at once, forked while other threads are in gRPC;
# with GRPC_ENABLE_FORK_SUPPORT=0 in the head's environment 24 of 24 went through. The join is refused
# with this message, and the next one, with a new server, goes through.
CLIENT_SERVER_FAILED = "Starting Ray client server failed"
JOIN_ATTEMPTS = 4


def join_cluster(ray: Any, address: str, attempts: int = JOIN_ATTEMPTS, pause: float = 1.0) -> None:
    """ray.init, tried again when Ray Client's per-client server failed to start (and only then)."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
            return
        except ConnectionError as error:
            if CLIENT_SERVER_FAILED not in str(error) or attempt == attempts:
                raise
            log.warning(
                "Ray Client server for %s failed to start (try %d of %d); trying again", address, attempt, attempts
            )
            if ray.is_initialized():
                ray.shutdown()
            time.sleep(pause * attempt)


def embed_to_shards(options: RayOptions, job: EmbedJob, paths: Sequence[str], folder: Path) -> Iterator[Path]:
    """Decode and embed `paths` on Ray; yield each result batch as a shard file written in `folder`.

    Raises:
        ConfigError: Ray is not installed.
        ClusterError: the cluster cannot be joined, or the job failed (shards yielded so far stay good).
    """
    with connected(options.address) as ray:
        layout = plan(ray.cluster_resources(), options.actors)
        log.info("Ray job: %d photos, %s", len(paths), layout)
        from pixsearch.indexer.ray_workers import PhotoSource

        source = PhotoSource(list(paths), job.decode, job.batch_size)
        if ray.util.client.ray.is_connected():
            # Ray Client: Ray Data cannot run its executor in a client process (nor stream a task's
            # results to one), so an actor in the cluster runs the pipeline and hands out its batches
            runner = ray.remote(num_cpus=0)(Pipeline).remote(source, job, options.model, layout)
            tables = iter(lambda: ray.get(runner.next.remote()), None)
        else:
            tables = _embedded_batches(source, job, options.model, layout)
        run = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        try:
            for number, table in enumerate(tables):
                name = folder / f"{run}-{number:06d}{shards.SUFFIX}"
                yield shards.write_shard(name, job.model_key, batch_of(table, job.dim))
        except ray.exceptions.RayError as error:
            raise ClusterError(f"the Ray job failed: {failure_reason(error)}") from error


class Pipeline:
    """The pipeline as a Ray actor, for a driver joined through Ray Client: `next()` is its next batch
    of results, None at the end."""

    def __init__(self, source: Any, job: EmbedJob, model: str, layout: Plan) -> None:
        self._tables = _embedded_batches(source, job, model, layout)

    def next(self) -> Any:
        return next(self._tables, None)


def _embedded_batches(source: Any, job: EmbedJob, model: str, layout: Plan) -> Iterator[Any]:
    """The Ray Data pipeline: photos read and decoded by `source`, embedded by a pool of actors that
    hold the model; yields each batch of results as a pyarrow table."""
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller shows progress
    from pixsearch.indexer.ray_workers import EmbedActor

    embedded = ray.data.read_datasource(source).map_batches(
        EmbedActor,
        fn_constructor_kwargs={"job": job, "model": model, "threads": layout.cpus_per_actor},
        batch_size=job.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=layout.actors),
        num_cpus=layout.cpus_per_actor,
        num_gpus=layout.gpus_per_actor or None,
    )
    yield from embedded.iter_batches(batch_size=None, batch_format="pyarrow")


def failure_reason(error: BaseException) -> str:
    """The worker's own error where Ray carries one (a model that will not load, say), else Ray's
    message's last line: Ray's text is the remote traceback, which ends with the error itself."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, PixsearchError):
            return f"{type(seen).__name__}: {seen}"
        seen = getattr(seen, "cause", None) or seen.__cause__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def batch_of(table: Any, dim: int) -> shards.EmbeddedBatch:
    """An EmbeddedBatch from a table of `ray_workers.EmbedActor` (failed files as Failures)."""
    rows = table.to_pylist()
    photos = [row for row in rows if row["reason"] is None]
    vectors = np.frombuffer(b"".join(row["vector"] for row in photos), dtype=np.float32).reshape(len(photos), dim)
    return shards.EmbeddedBatch(
        [_facts(row) for row in photos],
        vectors.copy(),
        [Failure(row["path"], row["reason"]) for row in rows if row["reason"] is not None],
    )


def _facts(row: dict[str, Any]) -> PhotoFacts:
    taken = row["taken_at"]
    return PhotoFacts(
        row["path"],
        row["content_hash"],
        row["size"],
        row["mtime"],
        row["width"],
        row["height"],
        datetime.fromisoformat(taken) if taken else None,
        row["camera"],
    )
