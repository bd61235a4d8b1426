"""`--ray` without a cluster: its options, the actor layout, and a clear message where Ray is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pixsearch.cli import main
from pixsearch.errors import ConfigError
from pixsearch.indexer.ray_job import JOIN_ATTEMPTS, Plan, RayOptions, join_cluster, plan


def test_plan_gives_each_gpu_an_actor_and_splits_cpus_without_gpus() -> None:
    assert plan({"CPU": 64, "GPU": 8}, None) == Plan(actors=8, gpus_per_actor=1.0, cpus_per_actor=1)
    assert plan({"CPU": 64, "GPU": 2}, 4) == Plan(actors=4, gpus_per_actor=0.5, cpus_per_actor=1)
    assert plan({"CPU": 2}, None) == Plan(actors=1, gpus_per_actor=0.0, cpus_per_actor=1)
    assert plan({"CPU": 16}, None).actors == 8
    assert plan({"CPU": 16}, 3).actors == 3


@pytest.mark.parametrize(("address", "actors", "words"), [(" ", None, "needs an address"), ("auto", 0, "at least 1")])
def test_bad_ray_options_are_refused(address: str, actors: int | None, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        RayOptions(address, actors)


def test_index_with_ray_missing_says_how_to_install_it(
    tmp_path: Path, clip_spec: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    (tmp_path / "photos").mkdir()
    library = tmp_path / "library"
    code = main(["index", str(tmp_path / "photos"), "--library", str(library), "--model", clip_spec, "--ray", "auto"])
    assert code != 0
    assert 'pip install "pixsearch[ray]"' in capsys.readouterr().err
    assert not library.exists()  # refused before anything was written


def test_ray_actors_without_ray_is_refused(tmp_path: Path, clip_spec: str, capsys) -> None:
    (tmp_path / "photos").mkdir()
    code = main(["index", str(tmp_path / "photos"), "--library", str(tmp_path / "lib"), "--ray-actors", "2"])
    assert code != 0 and "--ray-actors needs --ray" in capsys.readouterr().err


def test_a_failed_job_is_told_by_the_workers_own_error() -> None:
    from pixsearch.errors import ModelNotFoundError
    from pixsearch.indexer.ray_job import failure_reason

    remote = "Traceback (most recent call last):\n  File 'x.py', line 1\npixsearch.errors.ModelLoadError: bad\n  "
    assert failure_reason(RuntimeError(remote)) == "pixsearch.errors.ModelLoadError: bad"
    wrapped = RuntimeError("the actor died")
    wrapped.cause = ModelNotFoundError("model clip:/m: no folder /m")  # how Ray carries a task's error
    assert failure_reason(wrapped) == "ModelNotFoundError: model clip:/m: no folder /m"


class FlakyRay:
    """Stands in for the `ray` module at the join: refuses the first joins as Ray Client's proxy does
    when the server it starts for a client dies (the message is Ray 2.60's), then lets one through."""

    def __init__(self, refusals: int, message: str) -> None:
        self.refusals, self.message, self.joins, self.joined = refusals, message, 0, False

    def init(self, address: str, **_: object) -> None:
        self.joins += 1
        if self.joins <= self.refusals:
            raise ConnectionAbortedError(f"Initialization failure from server:\n{self.message}")
        self.joined = True

    def is_initialized(self) -> bool:
        return self.joined

    def shutdown(self) -> None:
        self.joined = False


SERVER_DIED = "RuntimeError: Starting Ray client server failed. See ray_client_server_23000.err for detailed logs."


def test_a_join_refused_because_the_client_server_died_is_tried_again() -> None:
    ray = FlakyRay(refusals=2, message=SERVER_DIED)
    join_cluster(ray, "ray://127.0.0.1:10001", pause=0)
    assert ray.joins == 3 and ray.joined


def test_other_refusals_and_a_server_that_keeps_dying_are_not_hidden() -> None:
    wrong_version = FlakyRay(refusals=1, message="Version mismatch: client 2.60.0, server 2.50.0")
    with pytest.raises(ConnectionError, match="Version mismatch"):
        join_cluster(wrong_version, "ray://127.0.0.1:10001", pause=0)
    assert wrong_version.joins == 1
    dying = FlakyRay(refusals=10, message=SERVER_DIED)
    with pytest.raises(ConnectionError, match="Starting Ray client server failed"):
        join_cluster(dying, "ray://127.0.0.1:10001", pause=0)
    assert dying.joins == JOIN_ATTEMPTS
