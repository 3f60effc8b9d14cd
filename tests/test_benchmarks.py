"""The advisor suites' bookkeeping, on their recorded results (no training): the shipped
calibrations are what the suites' code gives, and both modalities go through the same code."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import advisor_suite  # noqa: E402
import advisor_suite_images  # noqa: E402

from finetune_advisor.advisor import _forecast  # noqa: E402

SUITES = {"text": advisor_suite.RESULTS, "image": advisor_suite_images.RESULTS}


@pytest.fixture
def calibration_files(tmp_path, monkeypatch):
    """Where calibrate_suite writes, in tmp_path rather than the package."""
    monkeypatch.setattr(_forecast, "calibration_file", lambda modality: tmp_path / f"{modality}.json")
    return tmp_path


def test_the_image_suite_is_summarised_and_calibrated_by_the_text_suites_code():
    assert advisor_suite_images.summary is advisor_suite.summary
    assert advisor_suite_images.calibrate_suite is advisor_suite.calibrate_suite
    assert advisor_suite_images.measure is advisor_suite.measure


@pytest.mark.parametrize("modality", sorted(SUITES))
def test_the_shipped_calibration_is_what_the_suite_gives_on_its_recorded_results(modality, calibration_files):
    record = json.loads(SUITES[modality].read_text())
    summary, calibration = advisor_suite.calibrate_suite(copy.deepcopy(record["tasks"]), modality)
    shipped = _forecast.load_calibration(_forecast.CALIBRATION_FILE if modality == "text"
                                         else _forecast.IMAGE_CALIBRATION_FILE)
    for key in ("scale", "half_width", "tasks", "valid_rows"):
        assert calibration[key] == pytest.approx(shipped[key]), key
    for key in advisor_suite.HEADLINE + ("forecast",):
        assert summary[key] == pytest.approx(record["summary"][key]), key


def test_a_scale_is_not_fitted_on_a_suite_where_fine_tuning_never_paid(calibration_files):
    """Without the image suite's two tasks where fine-tuning paid 15-22 points, the rule ships the
    raw forecast (scale 1), whatever the fitted line's errors: it would learn that fine-tuning
    never pays."""
    tasks = [t for t in json.loads(SUITES["image"].read_text())["tasks"] if t["task"] not in ("side", "shoe-side")]
    summary, calibration = advisor_suite.calibrate_suite(tasks, "image")
    assert calibration["scale"] == 1.0 and not calibration["scale_fitted"]
    assert summary["forecast"] == "raw" and summary["other"]["forecast"] == "fitted scale"
    assert "fewer than 2" in calibration["why"]
    assert json.loads((calibration_files / "image.json").read_text())["scale"] == 1.0


def test_a_close_call_measured_again_on_unseen_rows_judges_the_decision_only_for_the_same_task(tmp_path, monkeypatch):
    """advisor_holdout.json's best choice replaces the split's for the task it was measured for; a
    measurement made for other training rows (a fingerprint the cached ground truth no longer has),
    or by another protocol than the ground truth's (an older trainer), is ignored."""
    monkeypatch.setattr(advisor_suite, "HELD_OUT", tmp_path / "held_out.json")
    monkeypatch.setattr(advisor_suite, "MEASURED", tmp_path / "measured.json")
    old, new = {"epochs": 3}, {"epochs": 3, "batchnorm": "frozen"}
    (tmp_path / "measured.json").write_text(json.dumps({"a": {"fingerprint": "A", "protocol": old},
                                                        "b": {"fingerprint": "B", "protocol": old},
                                                        "c": {"fingerprint": "C", "protocol": new}}))
    unseen = {"head": 0.90, "fine_tune": 0.95, "ngram": 0.5}
    (tmp_path / "held_out.json").write_text(json.dumps({"protocol": old, "tasks": [
        {"task": "a", "fingerprint": "A", "held_out_choice": "fine-tune", "held_out_rows": 1000, "held_out": unseen},
        {"task": "b", "fingerprint": "old", "held_out_choice": "fine-tune", "held_out_rows": 1000, "held_out": unseen},
        {"task": "c", "fingerprint": "C", "held_out_choice": "fine-tune", "held_out_rows": 1000, "held_out": unseen}]}))
    rows = [{"task": name, "measured_choice": "head-only", "zero_shot": 0.3, "measured_head": 0.91,
             "measured_fine_tune": 0.91, "measured_ngram": 0.5} for name in ("a", "b", "c")]
    advisor_suite.with_held_out(rows)
    assert [advisor_suite.best_choice(r) for r in rows] == ["fine-tune", "head-only", "head-only"]
    assert advisor_suite.regret(rows[0], "head-only") == pytest.approx(0.05)  # on the unseen rows
    assert advisor_suite.regret(rows[1], "head-only") == pytest.approx(0.0)  # on the split


def test_a_close_call_is_a_best_choice_within_the_noise_of_its_validation_rows():
    """2 x sqrt(2) standard errors at the two accuracies' mean: at 0.91 on 200 rows about 0.057."""
    def row(head, fine_tune, valid_rows=200):
        return {"zero_shot": None, "measured_head": head, "measured_fine_tune": fine_tune, "measured_ngram": 0.5,
                "valid_rows": valid_rows}

    assert advisor_suite.close_call(row(0.90, 0.92))
    assert not advisor_suite.close_call(row(0.85, 0.95))
    assert not advisor_suite.close_call(row(0.90, 0.92, valid_rows=20000))  # many rows tell 2 points apart


def test_held_out_images_are_the_test_files_images_made_as_the_task_makes_its_own(tmp_path):
    """advisor_holdout_images reads Fashion-MNIST's idx files and gives each class its share of
    the test images with the task's look (inverted here), and side canvases half left, half right,
    each test image once."""
    import gzip

    import numpy as np
    from PIL import Image, ImageOps

    import advisor_holdout_images as holdout

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), np.repeat(np.arange(10), 4).astype(np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(16) + images.tobytes()))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(8) + labels.tobytes()))
    test = holdout.fashion_test(str(tmp_path))
    assert np.array_equal(test[0], images) and np.array_equal(test[1], labels)

    inverted = holdout.unseen_images("inverted", test, 20, np.random.default_rng(3))
    assert list(inverted) == list(holdout.CLASSES) and all(len(v) == 2 for v in inverted.values())
    expected = np.asarray(ImageOps.invert(Image.fromarray(images[4 * 3])))  # the first image of class 3
    assert np.array_equal(np.asarray(inverted[holdout.CLASSES[3]][0]), expected)

    side = holdout.unseen_images("side", test, 40, np.random.default_rng(3))
    lefts, rights = (np.stack([np.asarray(c) for c in side[s]]) for s in ("left", "right"))
    assert len(lefts) == len(rights) == 20
    assert not rights[:, :, :28].any() and not lefts[:, :, 28:].any()
    tiles = {im.tobytes() for im in images}
    used = [c[:, :28].tobytes() for c in lefts] + [c[:, 28:].tobytes() for c in rights]
    assert set(used) == tiles and len(used) == len(tiles)


def test_texture_crops_from_the_top_and_the_bottom_half_share_no_pixel():
    """Training crops come from a photograph's top half, validation and held-out crops from its
    bottom half: on a photograph whose value is its row // 2, every top crop reads below 128 and
    every bottom crop 128 or more."""
    import numpy as np

    photo = np.repeat((np.arange(512) // 2).astype(np.uint8)[:, None], 512, axis=1)
    rng = np.random.default_rng(0)
    top = np.stack([np.asarray(advisor_suite_images.texture_crop(photo, "top", rng)) for _ in range(200)])
    bottom = np.stack([np.asarray(advisor_suite_images.texture_crop(photo, "bottom", rng)) for _ in range(200)])
    assert top.shape == bottom.shape == (200, 32, 32)
    assert top.max() < 128 <= bottom.min()
