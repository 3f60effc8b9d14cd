"""The training loop: the cache changes speed, not results; it learns; it stops; it saves and reloads."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import TINY_CONFIGS
from finetune_advisor.core import FeatureCache, InputError, TrainConfig, TrainingError, load_backbone, load_classifier, train

FAST = dict(epochs=2, batch_size=8, max_length=32)


def losses(result):
    return np.array(result.step_losses)


FAST_FAMILIES = ("bert", "roberta", "distilbert")  # three layer tables in the fast tier; every family in the suite


@pytest.mark.parametrize("family", [f if f in FAST_FAMILIES else pytest.param(f, marks=pytest.mark.slow)
                                    for f in TINY_CONFIGS])
def test_cached_and_uncached_training_give_the_same_losses(tiny_model, topic_task, family):
    backbone = load_backbone(str(tiny_model(family)))
    for k in range(backbone.num_blocks):  # k = L needs no cache
        cached = train(backbone, topic_task, TrainConfig(unfrozen_layers=k, **FAST), progress=False)
        plain = train(backbone, topic_task, TrainConfig(unfrozen_layers=k, cache="off", **FAST), progress=False)
        inner_ok = backbone.arch.can_cache_inner(backbone.model)
        assert cached.cached == (k == 0 or inner_ok)
        np.testing.assert_allclose(losses(cached), losses(plain), rtol=1e-4, atol=1e-5)
        assert [h.valid_accuracy for h in cached.history] == [h.valid_accuracy for h in plain.history]


def test_deberta_with_conv_falls_back_to_uncached_training(tiny_model, topic_task):
    backbone = load_backbone(str(tiny_model("deberta-v2", conv_kernel_size=3)))
    result = train(backbone, topic_task, TrainConfig(unfrozen_layers=1, **FAST), progress=False)
    assert not result.cached and "cannot be run from a middle block" in result.notes[0]


def test_training_is_repeatable_and_leaves_the_backbone_untouched(tiny_model, topic_task):
    backbone = load_backbone(str(tiny_model("bert")))
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    config = TrainConfig(unfrozen_layers=3, **FAST)
    first, second = (train(backbone, topic_task, config, progress=False) for _ in range(2))
    np.testing.assert_array_equal(losses(first), losses(second))
    after = backbone.model.state_dict()
    assert all((before[k] == after[k]).all() for k in before)
    assert train(backbone, topic_task, TrainConfig(unfrozen_layers=3, seed=1, **FAST),
                 progress=False).step_losses != first.step_losses


def test_a_head_on_minilm_features_learns_the_topics(minilm, topic_task):
    result = train(minilm, topic_task, TrainConfig(unfrozen_layers=0, epochs=15, batch_size=8, patience=0),
                   progress=False)
    assert result.best_valid_accuracy >= 0.9
    assert losses(result)[-5:].mean() < losses(result)[:5].mean()
    probs = result.model.predict_proba(["the goalkeeper saved a penalty", "the central bank cut rates"])
    assert [topic_task.labels[i] for i in probs.argmax(1)] == ["sport", "money"]


def test_fine_tuning_the_top_block_learns(minilm, topic_task):
    result = train(minilm, topic_task, TrainConfig(unfrozen_layers=1, epochs=6, batch_size=8, patience=0),
                   progress=False)
    assert result.cached and result.best_valid_accuracy >= 0.9


def test_head_init_starts_training_from_the_given_head(minilm, topic_task):
    from finetune_advisor.advisor._signals import probe_head

    x = minilm.embed(topic_task.train.texts, max_length=128, progress=False)
    vx = minilm.embed(topic_task.valid.texts, max_length=128, progress=False)
    weight, bias = probe_head(x, topic_task.train.labels, topic_task.num_labels, c=1.0)
    probe = float(np.mean((vx @ weight.T + bias).argmax(1) == topic_task.valid.labels))
    # a learning rate too small to move anything: the model predicts what the given head predicts
    config = TrainConfig(unfrozen_layers=1, epochs=1, learning_rate=1e-12, head_lr_multiplier=1, batch_size=8)
    started = train(minilm, topic_task, config, head_init=(weight, bias), progress=False)
    np.testing.assert_allclose(started.model.head.weight.numpy(), weight, atol=1e-6)
    assert started.best_valid_accuracy == pytest.approx(probe) and probe >= 0.9
    random = train(minilm, topic_task, config, progress=False)
    assert random.best_valid_accuracy < probe - 0.3
    with pytest.raises(ValueError, match="head_init has shapes"):
        train(minilm, topic_task, config, head_init=(weight[:2], bias[:2]), progress=False)


def test_early_stopping_restores_the_best_epoch(tiny_model, topic_task):
    backbone = load_backbone(str(tiny_model("bert")))
    # a learning rate too small to change anything: accuracy never improves after epoch 1
    result = train(backbone, topic_task, TrainConfig(unfrozen_layers=1, learning_rate=1e-12, epochs=10, patience=2,
                                                     batch_size=8, max_length=32), progress=False)
    assert len(result.history) == 3 and result.stopped_early and result.best_epoch == 1


def test_on_epoch_sees_validation_accuracy_and_can_stop_training(tiny_model, topic_task):
    backbone = load_backbone(str(tiny_model("bert")))
    seen = []

    class Pruned(Exception):
        pass

    def on_epoch(epoch, accuracy):
        seen.append((epoch, accuracy))
        if epoch == 2:
            raise Pruned

    with pytest.raises(Pruned):
        train(backbone, topic_task, TrainConfig(unfrozen_layers=1, **{**FAST, "epochs": 5, "patience": 0}),
              on_epoch=on_epoch, progress=False)
    assert [e for e, _ in seen] == [1, 2] and all(0 <= a <= 1 for _, a in seen)


def test_a_first_rung_reports_inside_epoch_one_and_changes_nothing_else(tiny_model, topic_task):
    backbone = load_backbone(str(tiny_model("bert")))
    config = TrainConfig(unfrozen_layers=1, **{**FAST, "epochs": 2, "patience": 0})
    seen, plain = [], []
    checked = train(backbone, topic_task, config, on_epoch=lambda e, a: seen.append((e, a)), first_rung=1 / 3,
                    progress=False)
    whole = train(backbone, topic_task, config, on_epoch=lambda e, a: plain.append((e, a)), progress=False)
    assert [e for e, _ in seen] == [1 / 3, 1, 2] and [e for e, _ in plain] == [1, 2]
    assert seen[1:] == plain  # the early look is a validation pass only: same steps, same accuracies
    np.testing.assert_array_equal(losses(checked), losses(whole))
    assert [h.epoch for h in checked.history] == [1, 2] and checked.best_epoch == whole.best_epoch


def test_a_first_rung_can_stop_training_after_a_share_of_the_data(tiny_model, topic_task, monkeypatch):
    import torch

    backbone = load_backbone(str(tiny_model("bert")))
    config = TrainConfig(unfrozen_layers=1, **{**FAST, "epochs": 3, "patience": 0})
    steps_per_epoch = -(-len(topic_task.train) // config.batch_size)
    steps, seen, loss = [], [], torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: steps.append(1) or loss(*a, **k))

    class Pruned(Exception):
        pass

    def on_epoch(epoch, accuracy):
        seen.append(epoch)
        raise Pruned

    with pytest.raises(Pruned):
        train(backbone, topic_task, config, on_epoch=on_epoch, first_rung=1 / 3, progress=False)
    assert seen == [1 / 3] and len(steps) == round(steps_per_epoch / 3) < steps_per_epoch


def test_length_grouped_batches_cover_every_row_once_and_pad_less():
    from finetune_advisor.core._batches import length_grouped_batches

    lengths = np.random.default_rng(0).integers(5, 120, 1000)
    order = np.random.default_rng(1).permutation(1000)
    batches = length_grouped_batches(order, lengths, 16, np.random.default_rng(2), group=10)
    assert sorted(np.concatenate(batches)) == list(range(1000)) and len(batches) == 63  # ceil(1000 / 16)
    assert sum(len(b) < 16 for b in batches) == 1

    def padded(bs):
        return sum(len(b) * lengths[b].max() for b in bs)

    random = [order[s:s + 16] for s in range(0, 1000, 16)]
    assert padded(batches) < 0.7 * padded(random)  # a batch pads to about its own rows' length
    again = length_grouped_batches(order, lengths, 16, np.random.default_rng(2), group=10)
    assert all((a == b).all() for a, b in zip(batches, again))  # seeded


def test_grouped_batches_change_the_batches_not_what_is_computed(tiny_model, topic_task):
    """Grouped by length, cached and uncached training still give the same losses; a head alone
    (pooled features of one size) is not grouped, so its losses do not move."""
    backbone = load_backbone(str(tiny_model("bert")))
    grouped = dict(FAST, group_by_length=True)
    cached = train(backbone, topic_task, TrainConfig(unfrozen_layers=1, **grouped), progress=False)
    plain = train(backbone, topic_task, TrainConfig(unfrozen_layers=1, cache="off", **grouped), progress=False)
    np.testing.assert_allclose(losses(cached), losses(plain), rtol=1e-4, atol=1e-5)
    random = train(backbone, topic_task, TrainConfig(unfrozen_layers=1, **FAST), progress=False)
    assert len(random.step_losses) == len(cached.step_losses) and random.step_losses != cached.step_losses
    head = [train(backbone, topic_task, TrainConfig(unfrozen_layers=0, **FAST, group_by_length=g), progress=False)
            for g in (False, True)]
    np.testing.assert_array_equal(losses(head[0]), losses(head[1]))
    # every text cut to max_length: nothing to group, the random batches stay
    full = [train(backbone, topic_task, TrainConfig(unfrozen_layers=1, **{**FAST, "max_length": 8}, group_by_length=g),
                  progress=False) for g in (False, True)]
    np.testing.assert_array_equal(losses(full[0]), losses(full[1]))


def test_nan_loss_raises_training_error(tiny_model, topic_task):
    backbone = load_backbone(str(tiny_model("bert")))
    with pytest.raises(TrainingError, match=r"the loss became (nan|inf) at epoch 1.*Lower the learning rate"):
        train(backbone, topic_task, TrainConfig(unfrozen_layers=0, learning_rate=1e37, head_lr_multiplier=1,
                                                weight_decay=0, max_grad_norm=0, **FAST), progress=False)


def test_disk_cache_is_reused_and_gives_the_same_result(tiny_model, topic_task, tmp_path):
    backbone = load_backbone(str(tiny_model("bert")))
    config = TrainConfig(unfrozen_layers=1, **FAST)
    first = train(backbone, topic_task, config, cache=FeatureCache(tmp_path), progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # train and valid inputs of block 2
    fresh = FeatureCache(tmp_path)
    second = train(backbone, topic_task, config, cache=fresh, progress=False)
    assert (fresh.hits, fresh.misses) == (2, 0)
    np.testing.assert_array_equal(losses(first), losses(second))


def test_memory_cache_is_shared_across_runs(tiny_model, topic_task):
    backbone = load_backbone(str(tiny_model("bert")))
    cache = FeatureCache()
    for lr in (1e-4, 3e-4):
        train(backbone, topic_task, TrainConfig(unfrozen_layers=2, learning_rate=lr, **FAST), cache=cache,
              progress=False)
    assert (cache.misses, cache.hits) == (2, 2)


def test_memory_cache_stays_within_its_byte_budget(tiny_model, topic_task):
    import torch

    backbone = load_backbone(str(tiny_model("bert")))
    one = FeatureCache().features(backbone, topic_task.train, start=1, max_length=32, progress=False)
    size = sum(t.numel() * t.element_size() for t in one)
    cache = FeatureCache(max_bytes=int(size * 1.5))  # room for one entry of this size, not two
    for start in (1, 2, 1):
        got = cache.features(backbone, topic_task.train, start=start, max_length=32, progress=False)
        assert cache.bytes_held <= size * 1.5
    assert cache.misses == 3  # start 1 was dropped when start 2 came, then computed again
    assert all(torch.equal(a, b) for a, b in zip(got, one))  # the same features


def test_save_then_reload_with_plain_transformers(minilm, topic_task, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    result = train(minilm, topic_task, TrainConfig(unfrozen_layers=1, **FAST), progress=False)
    path = result.model.save(tmp_path / "best_model")
    assert {"config.json", "model.safetensors", "tokenizer.json", "head.safetensors", "labels.json"} <= {
        p.name for p in path.iterdir()}
    texts = ["the team won", "profits rose"]
    reloaded = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        mine = result.model.encoder(**batch).last_hidden_state
        plain = reloaded(**batch).last_hidden_state
    torch.testing.assert_close(mine, plain)
    assert reloaded.config.id2label == dict(enumerate(topic_task.labels))
    again = load_classifier(path)
    np.testing.assert_allclose(again.predict_proba(texts), result.model.predict_proba(texts), atol=1e-6)
    assert again.labels == topic_task.labels and again.pooling == "mean"


def test_load_classifier_needs_head_and_labels(tiny_model):
    with pytest.raises(InputError, match="not a saved finetune-advisor classifier: it lacks labels.json, head"):
        load_classifier(tiny_model("bert"))


def test_layerwise_learning_rates(tiny_model, topic_task):
    from finetune_advisor.core import Classifier, freeze_top_k
    from finetune_advisor.core._train import _optimizer

    backbone = load_backbone(str(tiny_model("bert")))
    model = Classifier(backbone, 3)
    freeze_top_k(model.encoder, backbone.arch, 2)
    config = TrainConfig(unfrozen_layers=2, learning_rate=1e-4, head_lr_multiplier=10, layer_lr_decay=0.5)
    lrs = sorted({round(g["lr"], 12) for g in _optimizer(model, config, 2).param_groups})
    assert lrs == [5e-5, 1e-4, 1e-3]
    backbone.model.requires_grad_(False)


def test_config_errors_are_collected():
    with pytest.raises(InputError) as err:
        TrainConfig(learning_rate=0, schedule="step", batch_size=0)
    assert len(err.value.problems) == 3 and "schedule 'step' must be one of linear, cosine" in str(err.value)


def test_unfrozen_layers_beyond_the_model(tiny_model, topic_task):
    backbone = load_backbone(str(tiny_model("bert")))
    with pytest.raises(InputError, match=r"unfrozen_layers 5 is out of range: .* has 3 blocks, so use 0..3"):
        train(backbone, topic_task, TrainConfig(unfrozen_layers=5), progress=False)


def test_cuda_precision_on_the_cpu_is_refused(tiny_model, topic_task):
    backbone = load_backbone(str(tiny_model("bert")))
    with pytest.raises(InputError, match="precision 'bf16' needs a CUDA device"):
        train(backbone, topic_task, TrainConfig(precision="bf16", device="cpu"), progress=False)


@pytest.mark.gpu
def test_cuda_autocast_training_matches_fp32_closely(minilm, topic_task):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    amp = train(minilm, topic_task, TrainConfig(unfrozen_layers=2, device="cuda", **FAST), progress=False)
    fp32 = train(minilm, topic_task, TrainConfig(unfrozen_layers=2, device="cuda", precision="fp32", **FAST),
                 progress=False)
    assert amp.device.startswith("cuda")
    np.testing.assert_allclose(losses(amp), losses(fp32), rtol=0.05)


def test_disk_cache_mode_writes_to_the_configured_folder(tiny_model, topic_task, tmp_path):
    backbone = load_backbone(str(tiny_model("bert")))
    config = TrainConfig(unfrozen_layers=1, cache="disk", cache_dir=str(tmp_path / "cache"), **FAST)
    train(backbone, topic_task, config, progress=False)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    memory = TrainConfig(unfrozen_layers=1, cache="memory", cache_dir=str(tmp_path / "unused"), **FAST)
    train(backbone, topic_task, memory, progress=False)
    assert not (tmp_path / "unused").exists()


def test_disk_cache_is_keyed_by_the_weights_not_only_the_config(tiny_model, topic_task, tmp_path):
    """New weights under an unchanged config.json must not be served the old weights' features."""
    import torch
    from transformers import AutoModel

    folder = tmp_path / "model"
    shutil.copytree(tiny_model("bert"), folder)
    old = load_backbone(str(folder))
    stale = FeatureCache(tmp_path / "cache").features(old, topic_task.train, start=1, max_length=32, progress=False)
    torch.manual_seed(123)  # the same architecture and config, other weights
    AutoModel.from_config(old.model.config).save_pretrained(folder)
    new = load_backbone(str(folder))
    assert new.fingerprint != old.fingerprint
    cache = FeatureCache(tmp_path / "cache")
    fresh = cache.features(new, topic_task.train, start=1, max_length=32, progress=False)
    assert (cache.hits, cache.misses) == (0, 1)
    assert not torch.allclose(fresh[0], stale[0])


@pytest.mark.parametrize("damage", ["truncated", "other shape"])
def test_a_bad_cache_file_is_named_dropped_and_recomputed(damage, tiny_model, topic_task, tmp_path):
    import torch

    backbone = load_backbone(str(tiny_model("bert")))
    good = FeatureCache(tmp_path).features(backbone, topic_task.train, start=1, max_length=32, progress=False)
    (file,) = tmp_path.glob("*.pt")
    if damage == "truncated":
        file.write_bytes(file.read_bytes()[:100])
    else:
        torch.save([t[:, :3] for t in good], file)
    notes = []
    cache = FeatureCache(tmp_path, log=notes.append)
    got = cache.features(backbone, topic_task.train, start=1, max_length=32, progress=False)
    assert cache.misses == 1 and len(notes) == 1 and str(file) in notes[0] and "computing them again" in notes[0]
    assert all(torch.equal(a, b) for a, b in zip(got, good))
    assert torch.load(file, weights_only=True)[0].shape == good[0].shape  # rewritten, good again


def test_pooled_rows_stored_for_a_sample_are_served_to_the_whole_split(tiny_model, topic_task, tmp_path):
    """The advisor's sample stored, the search's whole split reads those rows and computes only
    the others; another split of other rows reads none of them."""
    import torch

    backbone = load_backbone(str(tiny_model("bert")))
    top, train = backbone.num_blocks, topic_task.train
    truth = FeatureCache().features(backbone, train, start=top, max_length=32, progress=False)
    sample = train.subset(range(0, len(train), 2))
    marked = truth[::2] + 1.0  # stored rows differ from computed ones, so a reused row is seen
    FeatureCache(pooled_dir=tmp_path).store_pooled(backbone, sample, marked.numpy(), max_length=32)

    cache = FeatureCache(pooled_dir=tmp_path)
    got = cache.features(backbone, train, start=top, max_length=32, progress=False)
    assert (cache.rows_reused, cache.rows_computed) == (len(sample), len(train) - len(sample))
    assert torch.equal(got[::2], marked)
    torch.testing.assert_close(got[1::2], truth[1::2], rtol=1e-4, atol=1e-5)
    again = FeatureCache(pooled_dir=tmp_path)  # a later process: everything on disk now
    assert torch.equal(again.features(backbone, train, start=top, max_length=32, progress=False), got)
    assert (again.hits, again.misses, again.rows_computed) == (1, 0, 0)
    other = FeatureCache(pooled_dir=tmp_path)
    other.features(backbone, topic_task.valid, start=top, max_length=32, progress=False)
    assert other.rows_reused == 0
    notes, files = [], set(tmp_path.glob("*.pt"))
    FeatureCache(pooled_dir=tmp_path, log=notes.append).store_pooled(backbone, sample, marked[:, :3].numpy(),
                                                                     max_length=32)
    assert len(notes) == 1 and "not cached" in notes[0] and set(tmp_path.glob("*.pt")) == files


def test_a_bad_file_of_pooled_rows_is_named_dropped_and_recomputed(tiny_model, topic_task, tmp_path):
    import torch

    backbone = load_backbone(str(tiny_model("bert")))
    top = backbone.num_blocks
    good = FeatureCache(tmp_path).features(backbone, topic_task.train, start=top, max_length=32, progress=False)
    (file,) = tmp_path.glob("pooled-*.pt")
    file.write_bytes(file.read_bytes()[:100])
    notes = []
    cache = FeatureCache(tmp_path, log=notes.append)
    got = cache.features(backbone, topic_task.train, start=top, max_length=32, progress=False)
    assert len(notes) == 1 and str(file) in notes[0] and "computing them again" in notes[0]
    assert cache.rows_computed == len(topic_task.train) and torch.equal(got, good)


def test_the_disk_cache_stays_under_its_bound(tiny_model, topic_task, tmp_path):
    backbone = load_backbone(str(tiny_model("bert")))
    FeatureCache(tmp_path).features(backbone, topic_task.train, start=1, max_length=32, progress=False)
    size = next(tmp_path.glob("*.pt")).stat().st_size
    cache = FeatureCache(tmp_path, disk_max_bytes=int(size * 2.5))  # room for two such files
    for start in (2, 3, 0):
        cache.features(backbone, topic_task.train, start=start, max_length=32, progress=False)
        assert sum(f.stat().st_size for f in tmp_path.glob("*.pt")) <= size * 2.5
    assert len(list(tmp_path.glob("*.pt"))) < 4  # the least recently used went
