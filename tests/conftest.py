"""Shared fixtures: the bundled MiniLM, tiny config-built models of every family, small datasets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from helpers import make_tiny_model, run_cli, topic_rows, write_csv

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the feature cache the stages share, fresh for each session: no test reads what another session left
os.environ.setdefault("FINETUNE_ADVISOR_CACHE", tempfile.mkdtemp(prefix="finetune-advisor-cache-"))

# Fixtures that run real searches or exports (tens of seconds each, the first time): a test that
# uses one is slow, whatever else it does, so `pytest -m "not slow"` stays a quick check.
SLOW_FIXTURES = {"searched_run", "full_run", "exported", "searched", "run_copy", "export_copy", "advised_as"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def minilm_source() -> str:
    from finetune_advisor.core import resolve_model_source

    return resolve_model_source("demo:minilm")


@pytest.fixture(scope="session")
def minilm():
    from finetune_advisor.core import load_backbone

    return load_backbone("demo:minilm")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, minilm_source):
    """tiny_model(family, **config_overrides) -> folder of a tiny saved model (built once per variant)."""
    built: dict = {}

    def build(family: str, **overrides) -> Path:
        key = (family, tuple(sorted(overrides.items())))
        if key not in built:
            folder = tmp_path_factory.mktemp(f"tiny-{family}")
            built[key] = make_tiny_model(folder, family, minilm_source, **overrides)
        return built[key]

    return build


@pytest.fixture
def topic_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "topics.csv", topic_rows())


@pytest.fixture(scope="session")
def topic_task(tmp_path_factory):
    from finetune_advisor.core import DataConfig, load_task

    path = write_csv(tmp_path_factory.mktemp("topics") / "topics.csv", topic_rows(copies=4))
    return load_task(str(path), DataConfig(valid_fraction=0.25, test_fraction=0.0))


@pytest.fixture(scope="session")
def searched_run(tmp_path_factory) -> Path:
    """A run directory made by the real `search` command: 2 quick trials of MiniLM on the topic data."""
    folder = tmp_path_factory.mktemp("searched")
    data = write_csv(folder / "topics.csv", topic_rows(copies=4))
    run = folder / "run"
    result = run_cli("search", "--model", "demo:minilm", "--data", data, "--out", run, "--trials", "2",
                     "--pruner", "none", "--space", "unfrozen_layers=1", "--space", "epochs=2",
                     "--space", "max_length=32", "--space", "learning_rate=1e-4", "--space", "head_lr_multiplier=50")
    assert result.returncode == 0, result.stderr
    return run


@pytest.fixture(scope="session")
def full_run(searched_run, tmp_path_factory) -> Path:
    """A run directory through every stage: the searched run, advised and exported by the real commands."""
    import shutil

    run = tmp_path_factory.mktemp("full") / "run"
    shutil.copytree(searched_run, run)
    data = searched_run.parent / "topics.csv"
    result = run_cli("advise", "--model", "demo:minilm", "--data", data, "--out", run, "--max-length", "32")
    assert result.returncode == 0, result.stderr
    result = run_cli("export", run, "--repeats", "3")
    assert result.returncode == 0, result.stderr
    return run
