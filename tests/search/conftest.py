from __future__ import annotations

import pytest
from world_model import WorldModel, train_world_model


@pytest.fixture(scope="session")
def world_model(tmp_path_factory: pytest.TempPathFactory) -> WorldModel:
    """The synthetic world's tiny CLIP, trained once per session (tests/tagging shares the folder)."""
    return train_world_model(tmp_path_factory.getbasetemp() / "world-model")
