"""Image classification: the folder and table readers, bad images, the preprocessing against
transformers' own, training with cached stages, the advisor's image signals, and tiny ResNet, ViT
and ConvNeXt models through advise, search, export and a torch-free predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SHAPES, make_tiny_image_model, run_cli, write_csv, write_shape_images
from PIL import Image

from finetune_advisor.core import DataConfig, InputError, RunDir, load_task

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_shape_images(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    built: dict = {}

    def build(family: str) -> Path:
        if family not in built:
            built[family] = make_tiny_image_model(tmp_path_factory.mktemp(f"tiny-{family}"), family)
        return built[family]

    return build


# --------------------------------------------------------------------------- data


def test_image_folder_is_read_as_an_image_task(shapes):
    task = load_task(str(shapes))
    assert task.modality == "image" and task.labels == sorted(SHAPES)
    assert len(task.train) + len(task.valid) + len(task.test) == 60
    assert all(Path(p).is_absolute() and Path(p).is_file() for s in task.splits() for p in s.texts)
    for s in task.splits():  # every class in every split, each path under its label's folder
        assert set(s.labels) == {0, 1, 2}
        assert all(Path(p).parent.name == task.labels[y] for p, y in zip(s.texts, s.labels))


def test_image_split_fingerprint_follows_the_files(tmp_path):
    root = write_shape_images(tmp_path / "imgs", per_class=4)
    before = load_task(str(root)).fingerprint
    victim = root / "circle" / "0.png"
    Image.new("RGB", (20, 20), (255, 0, 0)).save(victim)
    os.utime(victim, ns=(1, 1))  # a different modification time, whatever the clock
    assert load_task(str(root)).fingerprint != before


def test_table_with_an_image_column_resolves_relative_paths(tmp_path, shapes):
    rows = [{"path": os.path.relpath(p, tmp_path), "category": p.parent.name}
            for p in sorted(shapes.rglob("*.png"))]
    table = write_csv(tmp_path / "images.csv", rows)
    task = load_task(str(table), DataConfig(image_column="path"))
    assert task.modality == "image" and task.text_column == "path" and task.labels == sorted(SHAPES)
    assert all(Path(p).is_file() for p in task.train.texts)
    with pytest.raises(InputError, match="--image-column 'image' is not a column"):
        load_task(str(table), DataConfig(image_column="image"))


def test_every_bad_image_is_named_or_skipped(tmp_path):
    root = write_shape_images(tmp_path / "imgs", per_class=6)
    good = (root / "circle" / "0.png").read_bytes()
    (root / "circle" / "truncated.png").write_bytes(good[:60])
    (root / "square" / "fake.jpg").write_text("not a jpeg")
    (root / "square" / "notes.txt").write_text("a stray file")
    (root / "stripes" / "empty.png").write_bytes(b"")
    with pytest.raises(InputError) as err:
        load_task(str(root))
    message = str(err.value)
    assert "4 of 22 image(s) cannot be read" in message and "--skip-bad-images" in message
    for name, why in (("truncated.png", "cannot be decoded"), ("fake.jpg", "not an image"),
                      ("notes.txt", "not an image file"), ("empty.png", "not an image")):
        assert f"{name}: {why}" in message
    task = load_task(str(root), DataConfig(skip_bad_images=True))
    assert len(task.train) + len(task.valid) + len(task.test) == 18
    assert any("dropped 4 of 22" in w for w in task.warnings)
    # a table that names a missing file, and a class folder with no image at all
    table = write_csv(tmp_path / "t.csv", [{"image": str(root / "circle" / f"{i}.png"), "label": "a"} for i in range(4)]
                      + [{"image": "missing.png", "label": "b"}] * 3)
    with pytest.raises(InputError, match=r"missing.png: no such file"):
        load_task(str(table), DataConfig(image_column="image"))
    (root / "nothing").mkdir()
    with pytest.raises(InputError, match="'nothing' hold no images"):
        load_task(str(root), DataConfig(skip_bad_images=True))


def test_bad_images_exit_2_with_nothing_written(tmp_path):
    root = write_shape_images(tmp_path / "imgs", per_class=4)
    (root / "circle" / "bad.png").write_text("no")
    result = run_cli("advise", "--model", "demo:minilm", "--data", root, "--out", tmp_path / "run")
    assert result.returncode == 2 and "bad.png: not an image Pillow can read" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "advice.json").exists()


def test_fashion_mnist_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_ADVISOR_CACHE", str(tmp_path))
    task = load_task("demo:fashion-mnist")
    assert task.modality == "image" and task.num_labels == 10 and "t-shirt-top" in task.labels
    counts = np.bincount(np.concatenate([s.labels for s in task.splits()]))
    assert counts.tolist() == [300] * 10
    with Image.open(task.train.texts[0]) as image:
        assert image.size == (28, 28) and image.mode == "L"
    assert load_task("demo:fashion-mnist").fingerprint == task.fingerprint  # written once, then reused


# --------------------------------------------------------------------------- preprocessing


def _images():
    rng = np.random.default_rng(0)
    rgb = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((50, 70), (91, 33), (40, 40))]
    gray = Image.fromarray(rng.integers(0, 255, (60, 45), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8))
    return rgb + [gray, rgba]


@pytest.mark.parametrize("processor", ["vit", "convnext-crop", "convnext-warp", "convnext-mean"])
def test_preprocessing_matches_transformers(tmp_path, processor):
    """core._images gives the pixels transformers' Pillow image processors give (RGBA composited on
    white first, as ours does)."""
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    from finetune_advisor.core._images import ImageSpec, to_rgb

    made = {"vit": lambda: ViTImageProcessorPil(size={"height": 32, "width": 24}),
            "convnext-crop": lambda: ConvNextImageProcessorPil(size={"shortest_edge": 32}),
            "convnext-warp": lambda: ConvNextImageProcessorPil(size={"shortest_edge": 400}),
            "convnext-mean": lambda: ConvNextImageProcessorPil(size={"shortest_edge": 48}, image_mean=[0.1, 0.2, 0.3])}
    theirs = made[processor]()
    theirs.save_pretrained(tmp_path)
    spec = ImageSpec.from_folder(tmp_path)
    for image in _images():
        expected = theirs(to_rgb(image), return_tensors="np")["pixel_values"][0]
        got = spec.normalize(spec.pixels(image)[None])[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-5


def test_grayscale_and_transparent_images_become_rgb():
    from finetune_advisor.core._images import to_rgb

    gray = to_rgb(Image.new("L", (4, 4), 100))
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (100, 100, 100)
    clear = to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 0)))
    assert clear.getpixel((0, 0)) == (255, 255, 255)  # transparent: white, not black
    deep = to_rgb(Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)))
    assert deep.getpixel((0, 0)) == (255, 255, 255)


def test_a_thumbnail_is_a_small_png_of_the_image(tmp_path):
    import base64
    import io

    from finetune_advisor.core._images import thumbnail_uri

    Image.new("L", (300, 150), 200).save(tmp_path / "wide.png")
    uri = thumbnail_uri(tmp_path / "wide.png", size=96)
    assert uri.startswith("data:image/png;base64,")
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert thumb.size == (96, 48) and thumb.mode == "RGB" and thumb.getpixel((0, 0)) == (200, 200, 200)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert thumbnail_uri(tmp_path / "broken.png") is None


# --------------------------------------------------------------------------- backbone and training


@pytest.mark.parametrize("family", ["resnet", "vit", "convnext",  # a CNN, a ViT, a modern CNN: the fast tier's
                                    *[pytest.param(f, marks=pytest.mark.slow) for f in ("dinov2", "swin", "clip", "siglip")]])
def test_cached_stages_train_as_the_full_model(family, image_model, shapes):
    """With the frozen stages cached, every step's loss equals the uncached run's, for k = 0, 1, L
    (Swin: a middle stage cannot be fed a cached input, so k = 1 runs uncached and says so)."""
    from finetune_advisor.core import TrainConfig, load_backbone, train

    backbone = load_backbone(str(image_model(family)))
    assert backbone.modality == "image" and backbone.num_blocks == 3
    inner = backbone.arch.can_cache_inner(backbone.model)
    assert inner == (family != "swin")
    task = load_task(str(shapes))
    for k in (0, 1, 3):
        losses = {}
        for cache in ("memory", "off"):
            result = train(backbone, task, TrainConfig(unfrozen_layers=k, epochs=2, batch_size=8, cache=cache,
                                                       learning_rate=1e-3), progress=False)
            losses[cache] = np.array(result.step_losses)
            assert result.cached == (cache == "memory" and k < 3 and (k == 0 or inner))
        assert np.abs(losses["memory"] - losses["off"]).max() < 1e-4, (family, k)


def test_augmentation_flips_and_shifts_each_image_within_its_padding():
    import torch

    from finetune_advisor.core._batches import augment_pixels

    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16) + 1
    seen_flips = set()
    for seed in range(20):
        out = augment_pixels(x, torch.Generator().manual_seed(seed))
        assert out.shape == x.shape and out.is_contiguous(memory_format=torch.channels_last)
        for i in range(2):  # some flip and some offset within 2 px (16 // 8) give exactly this image
            padded = {f: torch.nn.functional.pad(x[i].flip(-1) if f else x[i], (2,) * 4) for f in (0, 1)}
            hits = [(f, dy, dx) for f in (0, 1) for dy in range(5) for dx in range(5)
                    if torch.equal(padded[f][:, dy:dy + 16, dx:dx + 16], out[i])]
            assert hits, (seed, i)
            seen_flips.add(hits[0][0])
        assert torch.equal(out, augment_pixels(x, torch.Generator().manual_seed(seed)))  # seeded
    assert seen_flips == {0, 1}


def test_augmented_training_runs_uncached_and_text_models_refuse_it(image_model, shapes, tiny_model):
    from finetune_advisor.core import DataConfig, TrainConfig, load_backbone, train

    backbone = load_backbone(str(image_model("resnet")))
    task = load_task(str(shapes))
    plain, augmented = (train(backbone, task, TrainConfig(unfrozen_layers=1, epochs=1, batch_size=8, augment=a,
                                                          learning_rate=1e-3), progress=False) for a in (False, True))
    assert plain.cached and not augmented.cached
    assert any("without the frozen-layer cache" in n for n in augmented.notes)
    assert plain.step_losses != augmented.step_losses
    text = load_backbone(str(tiny_model("bert")))
    rows = load_task("demo:bbc-news", DataConfig(max_rows=60))
    with pytest.raises(InputError, match="augment .* works on images"):
        train(text, rows, TrainConfig(unfrozen_layers=1, epochs=1, augment=True), progress=False)


def test_augment_in_the_search_space():
    from finetune_advisor.search._space import parse_param

    assert parse_param("augment", "false,true").choices == (False, True)
    assert parse_param("augment", "on").fixed is True
    with pytest.raises(InputError, match="'maybe' is not true or false"):
        parse_param("augment", "maybe")


def test_saved_image_classifier_reloads_with_its_preprocessing(image_model, shapes, tmp_path):
    from finetune_advisor.core import TrainConfig, load_backbone, load_classifier, train

    task = load_task(str(shapes))
    result = train(load_backbone(str(image_model("convnext"))), task,
                   TrainConfig(unfrozen_layers=1, epochs=1, batch_size=8), progress=False)
    result.model.save(tmp_path / "m")
    assert (tmp_path / "m" / "preprocessor_config.json").is_file()
    assert json.loads((tmp_path / "m" / "labels.json").read_text())["modality"] == "image"
    again = load_classifier(tmp_path / "m")
    assert np.abs(again.predict_proba(task.valid.texts) - result.model.predict_proba(task.valid.texts)).max() < 1e-6


def test_image_model_without_processor_is_refused(image_model, tmp_path):
    import shutil

    from finetune_advisor.core import load_backbone

    folder = shutil.copytree(image_model("resnet"), tmp_path / "m")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(InputError, match="no tokenizer files .* and no preprocessor_config.json"):
        load_backbone(str(folder))


# --------------------------------------------------------------------------- advisor signals


def test_image_head_zero_shot_matches_the_head_itself(tmp_path, shapes):
    """The zero-shot of a model whose ImageNet-style head names the labels (one name among its
    comma-separated synonyms) is its head's argmax over those classes, computed here with
    transformers' own processor and model."""
    import torch
    from transformers import AutoModelForImageClassification
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    from finetune_advisor.advisor._signals import image_head_zero_shot, zero_shot_method
    from finetune_advisor.core import load_backbone

    names = ["dog", "circle, round thing", "kite", "square", "stripes"]
    folder = make_tiny_image_model(tmp_path / "m", "resnet", head_labels=names)
    task = load_task(str(shapes))
    backbone = load_backbone(str(folder))
    assert zero_shot_method(backbone.model.config, task.labels, modality="image") == "head"
    assert zero_shot_method(backbone.model.config, task.labels + ["cat"], modality="image") is None
    got = image_head_zero_shot(str(folder), backbone.image_spec, task.valid.texts, task.valid.labels, task.labels,
                               device="cpu")
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    pixels = ConvNextImageProcessorPil.from_pretrained(folder)(
        [Image.open(p).convert("RGB") for p in task.valid.texts], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits.numpy()
    expected = float(np.mean(logits[:, [1, 3, 4]].argmax(1) == task.valid.labels))
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_image_text_zero_shot_matches_transformers(family, image_model, shapes, tmp_path):
    """An image-text model's zero-shot compares each image with one prompt a label: the
    similarities are transformers' own logits_per_image with the scale (and SigLIP's bias) taken
    off, i.e. cosines, for the template prompts and for --label-descriptions; the backbone is the
    image tower alone."""
    import torch
    from transformers import AutoModel, AutoProcessor

    from finetune_advisor.advisor._signals import image_text_zero_shot, zero_shot_method
    from finetune_advisor.core import image_text_logits, load_backbone

    folder = image_model(family)
    backbone = load_backbone(str(folder))
    assert backbone.image_text and backbone.model.config.model_type == f"{family}_vision_model"
    assert zero_shot_method(backbone.model.config, ["anything"], modality="image", image_text=True) == "image-text"
    task = load_task(str(shapes))
    model, processor = AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    images = [Image.open(p).convert("RGB") for p in task.valid.texts]
    padding = dict(padding="max_length", max_length=64) if family == "siglip" else dict(padding=True)
    descriptions = {label: f"a drawing of a {label} on noise" for label in task.labels}
    for given in (None, descriptions):
        prompts = [given[x] if given else f"a photo of a {x}." for x in task.labels]
        inputs = processor(text=prompts, images=images, return_tensors="pt", **padding)
        with torch.no_grad():
            logits = model(**inputs).logits_per_image
            expected = ((logits - getattr(model, "logit_bias", 0.0)) / model.logit_scale.exp()).numpy()
        got = image_text_logits(str(folder), backbone.image_spec, task.valid.texts, prompts)
        assert np.abs(got - expected).max() < 1e-4
        accuracy = image_text_zero_shot(str(folder), backbone.image_spec, task.valid.texts, task.valid.labels,
                                        task.labels, given, device="cpu")
        assert accuracy == pytest.approx(float(np.mean(expected.argmax(1) == task.valid.labels)))


def test_label_descriptions_need_a_text_tower(image_model, shapes, tmp_path):
    """--label-descriptions on an image task: read as for text (every label named), used by an
    image-text model, refused (exit 2, nothing written) for a model without a text tower."""
    from finetune_advisor.advisor import AdvisorConfig, read_inputs

    task = load_task(str(shapes))
    (tmp_path / "short.json").write_text(json.dumps({"circle": "a round thing"}))
    with pytest.raises(InputError, match="no sentence for label.*'square'.*a photo of a square"):
        read_inputs(task, AdvisorConfig(label_descriptions=str(tmp_path / "short.json")))
    full = tmp_path / "full.json"
    full.write_text(json.dumps({x: f"a {x}" for x in SHAPES}))
    assert read_inputs(task, AdvisorConfig(label_descriptions=str(full)))["descriptions"]["square"] == "a square"
    run = tmp_path / "run"
    result = run_cli("advise", "--model", image_model("resnet"), "--data", shapes, "--out", run,
                     "--label-descriptions", full, "--device", "cpu")
    assert result.returncode == 2 and "has no text tower" in result.stderr and not run.exists()


def test_image_input_shift_known_answers():
    """28-pixel grayscale images into a 224-pixel model: size ratio 28/224; data whose mean and std
    equal the model's normalisation: gap 0, contrast 1; a mean one std away: gap 1."""
    from finetune_advisor.advisor._scores import image_input_shift
    from finetune_advisor.core._images import ImageSpec

    spec = ImageSpec.from_config({"size": {"height": 224, "width": 224}, "image_mean": [0.5, 0.4, 0.3],
                                  "image_std": [0.2, 0.2, 0.2]})
    stats = {"width": [28, 28, 28], "height": [28, 28, 28], "grayscale_share": 1.0, "mean": [0.5, 0.4, 0.3],
             "std": [0.2, 0.2, 0.2]}
    out = image_input_shift(stats, spec)
    assert out["size_ratio"] == pytest.approx(0.125) and out["grayscale_share"] == 1.0
    assert out["normalisation_gap"] == pytest.approx(0.0) and out["contrast_ratio"] == pytest.approx(1.0)
    out = image_input_shift(dict(stats, mean=[0.7, 0.4, 0.3], std=[0.1, 0.1, 0.1]), spec)
    assert out["normalisation_gap"] == pytest.approx(1.0) and out["contrast_ratio"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("family", ["resnet", "vit", "convnext", "efficientnet", "dinov2", "swin", "clip", "siglip"])
def test_image_model_advise_search_export_predict(family, image_model, shapes, tmp_path):
    run = tmp_path / "run"
    model = image_model(family)
    result = run_cli("advise", "--model", model, "--data", shapes, "--out", run, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    advice = json.loads((run / "advice.json").read_text())
    from finetune_advisor.advisor import Signals, decide
    from finetune_advisor.core import AdviceRecord

    record = AdviceRecord.from_json(advice)  # the decision is the rule's on the record's own numbers
    limits = record.thresholds
    assert decide(Signals.from_advice(record), min_gain=limits.min_gain, target_accuracy=limits.target_accuracy,
                  budget_seconds=limits.budget_seconds, max_unk_rate=limits.max_unk_rate)[0] == record.decision
    assert 0 <= advice["probe"]["accuracy"] <= 1 and advice["shift"]["model_input"] == [32, 32]
    assert advice["shift"]["size_ratio"] == pytest.approx(20 / 32)
    assert advice["zero_shot"]["method"] == ("image-text" if family in ("clip", "siglip") else None)
    from finetune_advisor.advisor import _forecast  # the forecast is calibrated on the image suite, not the text one

    assert advice["expected"]["calibration"]["tasks"] == _forecast.load_calibration(
        _forecast.calibration_file("image"))["tasks"] != _forecast.load_calibration()["tasks"]
    result = run_cli("search", "--model", model, "--data", shapes, "--out", run, "--trials", "2", "--device", "cpu",
                     "--space", "unfrozen_layers=1:3", "--space", "epochs=2", "--space", "augment=false,true",
                     "--no-advice", "--pruner", "none")
    assert result.returncode == 0, result.stderr
    search = json.loads((run / "search.json").read_text())
    assert search["n_trials"]["complete"] == 2
    if search["front"]:  # an image's latency is timed at its one size: no length in tokens anywhere
        assert all(p["max_length"] is None for p in search["front"]) and "tokens" not in result.stdout
    result = run_cli("export", run, "--repeats", "3")
    if family == "swin":  # its window attention's views do not trace with a dynamic batch (torch.export)
        assert result.returncode == 2 and "Swin architecture does not export to ONNX" in result.stderr
        assert not (run / "export").exists()
        return
    assert result.returncode == 0, result.stderr
    record = json.loads((run / "export" / "export.json").read_text())
    fp32 = next(v for v in record["variants"] if v["file"] == "model.onnx")
    assert fp32["passed"] and fp32["max_abs_diff"] <= 1e-4
    assert (run / "export" / "preprocessor_config.json").is_file()
    static = next(v for v in record["variants"] if v["precision"] == "int8-static")  # every family has a Conv
    # int8 where it keeps accuracy: not the first or last conv, depthwise convs or the head (export._variants)
    assert record["static_quantization"]["tried"] and sum(static["quantized_nodes"].values()) >= 1
    assert static["accuracy_drop"] == pytest.approx(record["torch_accuracy"] - static["accuracy"])
    assert (run / "export" / static["file"]).is_file() == static["passed"]  # refused files are not shipped
    if not static["passed"]:
        assert "below torch's" in static["why"]
    images = [str(next((shapes / s).glob("*.png"))) for s in SHAPES]
    code = ("import sys, json\n"
            "from finetune_advisor.pipeline.cli import main\n"
            f"status = main(['predict', {str(run / 'export')!r}, *{images!r}])\n"
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert status == 0 and not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in lines] == images and all(r["label"] in SHAPES for r in lines)
    from finetune_advisor.core import load_classifier  # the deploy labels agree with the trained model's, image by image

    expected = load_classifier(run / "best_model").predict_proba(images).argmax(1)
    assert [r["label"] for r in lines] == [sorted(SHAPES)[i] for i in expected]
    bad = run_cli("predict", run / "export", tmp_path / "missing.png")
    assert bad.returncode == 2 and "missing.png: no such file" in bad.stderr
    from finetune_advisor.dashboard._runs import load_run, validation_errors  # the Mistakes tab: thumbnails and files

    errors = validation_errors(load_run(run))
    assert sum(row["support"] for row in errors.per_class) == len(RunDir(run).load_task().valid)
    for row in errors.mistakes:
        assert row["image"].startswith("data:image/png;base64,") and Path(row["file"]).is_file()


def test_efficientnet_lite0_demo_is_the_packaged_weights(tmp_path, monkeypatch):
    """Every weight of the demo model is the package's tensor, and each opened squeeze-excite gate
    passes its input unchanged (so the model is Lite0: checked once against timm's
    tf_efficientnet_lite0 by hand, max |feature difference| 7e-7; timm is not a dependency)."""
    import torch

    from finetune_advisor.core import load_backbone
    from finetune_advisor.core._demos import LITE0_FILE, LITE0_PACKAGE

    monkeypatch.setenv("FINETUNE_ADVISOR_CACHE", str(tmp_path))
    backbone = load_backbone("demo:efficientnet-lite0")
    assert backbone.arch.family == "EfficientNet" and backbone.num_blocks == 16 and backbone.hidden_size == 1280
    assert backbone.image_spec.output_size == (224, 224)
    import importlib.util

    package = Path(next(iter(importlib.util.find_spec(LITE0_PACKAGE).submodule_search_locations)))
    source = torch.load(package / "models" / LITE0_FILE, map_location="cpu", weights_only=True)
    state = backbone.model.state_dict()
    assert torch.equal(state["embeddings.convolution.weight"], source["_conv_stem.weight"])
    assert torch.equal(state["encoder.blocks.7.depthwise_conv.depthwise_conv.weight"],
                       source["_blocks.7._depthwise_conv.weight"])
    assert torch.equal(state["encoder.top_bn.running_var"], source["_bn1.running_var"])
    gates = []
    hooks = [b.squeeze_excite.register_forward_hook(lambda m, args, out: gates.append((args[0], out)))
             for b in backbone.model.encoder.blocks]
    with torch.no_grad():
        backbone.model(pixel_values=torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert len(gates) == 16 and all(torch.equal(i, o) for i, o in gates)


# --------------------------------------------------------------------------- a model without pretraining


def write_position_images(root: Path, per_class: int = 100, size: int = 48) -> Path:
    """Two classes told apart only by where a bright block sits (the left or the right half): raw
    pixels separate them perfectly, a convolutional model's pooled features mostly lose the position
    (a weak cue in the background's brightness, right 70% of the time, is what they keep)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, side in (("left", 0), ("right", 1)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = 40 if (rng.random() < 0.7) == (side == 0) else 90
            a = rng.integers(base, base + 40, (size, size)).astype(np.uint8)
            x0, y0 = rng.integers(0, size // 2 - 10) + side * size // 2, rng.integers(0, size - 10)
            a[y0:y0 + 10, x0:x0 + 10] = 230
            Image.fromarray(a, "L").save(root / label / f"{i}.png")
    return root


def test_the_pixel_baseline_separates_what_raw_pixels_carry(tmp_path):
    from finetune_advisor.advisor._signals import pixel_predictions

    task = load_task(str(write_position_images(tmp_path / "pos", per_class=40)), DataConfig(valid_fraction=0.1))
    predicted, c, method = pixel_predictions(task.train.texts, task.train.labels, task.valid.texts)
    assert (predicted == task.valid.labels).all() and method == "RBF SVM on 24x24 grey pixels" and c in (1, 10, 100)


def test_images_that_raw_pixels_read_better_give_change_model(tmp_path, image_model):
    """The image counterpart of the n-gram rule: the pixel model beats the probe beyond noise
    (McNemar) and the top of the forecast, so the advice is change-model, with that reason."""
    from finetune_advisor import AdvisorConfig, DataConfig, advise, load_backbone
    from finetune_advisor.advisor import standard_error

    task = load_task(str(write_position_images(tmp_path / "pos")), DataConfig(valid_fraction=0.4, test_fraction=0.0))
    advice = advise(load_backbone(str(image_model("resnet"))), task, AdvisorConfig(device="cpu", cache_dir=""),
                    progress=False)
    probe = advice.probe
    assert probe.baseline_accuracy == 1.0 and probe.baseline_method == "RBF SVM on 24x24 grey pixels"
    assert probe.accuracy < 0.95 and probe.baseline_p_value < 0.05
    n = probe.scored_rows  # a small validation split: cross-validated over every row, with that many rows' error
    assert probe.cv_folds and n == len(task.train) + len(task.valid)
    assert probe.accuracy_se == standard_error(probe.accuracy, n)
    assert probe.baseline_accuracy_se == standard_error(1.0, n) > 0  # every row right is not certainty
    assert advice.zero_shot.accuracy_se is None  # no zero-shot here
    assert advice.decision == "change-model"
    assert advice.reasons[0].startswith("A model with no pretraining (RBF SVM on 24x24 grey pixels) reaches 1.000")
    assert not any("n-gram" in s for s in advice.skipped)
