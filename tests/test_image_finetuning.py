"""Fine-tuning a network as transfer learning does it: BatchNorm's running statistics frozen while
the network trains (scale and shift still learn), re-estimated only when asked and never from a
remainder batch too small for them, a momentum in TensorFlow's convention converted on load, the
search space that offers `batchnorm=train` only where data is large, and enough steps on small
data (epochs, patience and pruning counted in passes of enough examples)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_tiny_image_model, run_cli, write_shape_images

from finetune_advisor.core import TrainConfig, load_backbone, load_task, train


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shape_images(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def effnet(tmp_path_factory):
    return make_tiny_image_model(tmp_path_factory.mktemp("tiny-efficientnet"), "efficientnet")


def _batchnorms(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


def test_tensorflow_momentum_is_converted_on_load(effnet, tmp_path):
    backbone = load_backbone(str(effnet))
    momenta = {m.momentum for m in _batchnorms(backbone.model).values()}
    assert momenta <= {0.01, 0.1} and 0.01 in momenta  # 0.99 (the config's) became 1 - 0.99; 0.1 stays
    assert backbone.model.config.batch_norm_momentum == pytest.approx(0.01)
    assert len(backbone.changes) == 1 and "0.99 (TensorFlow's convention)" in backbone.changes[0]
    assert "became 0.01" in backbone.changes[0]
    resnet = load_backbone(str(make_tiny_image_model(tmp_path / "resnet", "resnet")))
    assert resnet.changes == [] and {m.momentum for m in _batchnorms(resnet.model).values()} == {0.1}


@pytest.mark.parametrize("k", [1, 3])  # a top block (cached below it) and every block
def test_frozen_batchnorm_keeps_the_pretrained_statistics_and_trains_scale_and_shift(effnet, shapes, k):
    backbone = load_backbone(str(effnet))
    before = {n: (m.running_mean.clone(), m.running_var.clone(), m.weight.detach().clone())
              for n, m in _batchnorms(backbone.model).items()}
    task = load_task(str(shapes))
    result = train(backbone, task, TrainConfig(unfrozen_layers=k, epochs=2, batch_size=8, learning_rate=1e-2),
                   progress=False)
    after = _batchnorms(result.model.encoder)
    assert set(after) == set(before)
    for name, m in after.items():
        assert torch.equal(m.running_mean, before[name][0]) and torch.equal(m.running_var, before[name][1]), name
    trained = [n for n, m in after.items() if m.weight.requires_grad or not torch.equal(m.weight, before[n][2])]
    top = f"encoder.blocks.{backbone.num_blocks - 1}."
    assert any(n.startswith(top) and not torch.equal(after[n].weight, before[n][2]) for n in trained)


def test_trained_batchnorm_updates_statistics_from_full_batches_only(effnet, shapes):
    """batchnorm="train": each batch of >= 8 rows updates the statistics once; an epoch's remainder
    of fewer rows never does (num_batches_tracked counts the updates)."""
    backbone = load_backbone(str(effnet))
    task = load_task(str(shapes))
    n, batch, epochs = len(task.train), 16, 2
    assert 0 < n % batch < 8  # the remainder batch is too small for statistics
    result = train(backbone, task, TrainConfig(unfrozen_layers=3, epochs=epochs, batch_size=batch, patience=0,
                                               batchnorm="train"), progress=False)
    pretrained = {n_: int(m.num_batches_tracked) for n_, m in _batchnorms(backbone.model).items()}
    for name, m in _batchnorms(result.model.encoder).items():
        assert int(m.num_batches_tracked) - pretrained[name] == epochs * (n // batch), name
    frozen = train(backbone, task, TrainConfig(unfrozen_layers=3, epochs=1, batch_size=batch), progress=False)
    assert all(int(m.num_batches_tracked) == pretrained[name]
               for name, m in _batchnorms(frozen.model.encoder).items())


def test_batchnorm_mode_is_checked():
    with pytest.raises(ValueError, match="batchnorm 'eval' must be one of frozen, train"):
        TrainConfig(batchnorm="eval")


def test_small_data_gets_enough_epochs_in_the_space():
    from finetune_advisor.core import epoch_scale, epochs_for
    from finetune_advisor.search._space import BATCHNORM_TRAIN_ROWS, SearchSpace
    from finetune_advisor.search._study import make_pruner

    assert epochs_for(3, 280) == 12 and epochs_for(3, 5000) == 3 and epochs_for(4, 1) == 3200
    assert epoch_scale(260) == 4 and epoch_scale(800) == 1 and epoch_scale(260, min_examples=0) == 1
    assert make_pruner("hyperband", 39, min_steps=12)._min_resource == 12  # no rung inside the first 4 epochs
    assert make_pruner("median", 39, min_steps=12)._n_warmup_steps == 11
    assert SearchSpace.build({}, num_blocks=16, max_positions=512, train_rows=280, min_examples=0)["epochs"].text() == "1:4"
    space = SearchSpace.build({}, num_blocks=16, max_positions=512, train_rows=280)
    assert space.to_dict()["epochs"] == "3:12"
    assert SearchSpace.build({}, num_blocks=16, max_positions=512, train_rows=2000).to_dict()["epochs"] == "1:4"
    assert SearchSpace.build({"epochs": "2"}, num_blocks=16, max_positions=512, train_rows=280)["epochs"].fixed == 2
    assert "batchnorm" not in space.to_dict()  # a model without BatchNorm has nothing to choose
    small = SearchSpace.build({}, num_blocks=16, max_positions=512, train_rows=280, batchnorm=True)
    assert small.to_dict()["batchnorm"] == "frozen"
    large = SearchSpace.build({}, num_blocks=16, max_positions=512, train_rows=BATCHNORM_TRAIN_ROWS, batchnorm=True)
    assert large.to_dict()["batchnorm"] == "frozen,train"


@pytest.mark.slow
def test_search_records_the_momentum_conversion_and_searches_frozen_batchnorm(effnet, shapes, tmp_path):
    out = tmp_path / "run"
    result = run_cli("search", "--model", effnet, "--data", shapes, "--trials", "1", "--no-advice", "--no-latency",
                     "--space", "unfrozen_layers=1", "--space", "epochs=1", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "became 0.01 in PyTorch's" in result.stderr
    from finetune_advisor.core import epoch_scale

    rows = len(load_task(str(shapes)).train)  # small data: the search says how it waits
    assert f"({rows} training rows)" in result.stdout + result.stderr
    assert f"early stopping and pruning wait {epoch_scale(rows)} epochs where they would wait one" in (
        result.stdout + result.stderr)
    run = json.loads((out / "run.json").read_text())
    assert any("0.99 (TensorFlow's convention)" in c for c in run["commands"][-1]["model_changes"])
    search = json.loads((out / "search.json").read_text())
    assert search["space"]["batchnorm"] == "frozen"
    saved = json.loads((out / "best_model" / "config.json").read_text())
    assert saved["batch_norm_momentum"] == pytest.approx(0.01)  # reloads converted, and is not converted twice
    again = load_backbone(str(out / "best_model"))
    assert again.changes == [] and np.isclose(again.model.config.batch_norm_momentum, 0.01)
