"""Benchmark: the advisor's advice on image tasks against what training actually gives, in one run.

The model is demo:efficientnet-lite0 (ImageNet, 224 px, 16 blocks). The tasks come from four
labelled image sources that ship in packages, 50 training and 20 validation images a class
unless said:
- Fashion-MNIST (Debian package `dataset-fashion-mnist`, demo:fashion-mnist; MIT licence): 28 px
  grayscale clothing, 10 classes.
  - fashion: the images as they are;
  - blur: a strong Gaussian blur (radius 1.5 px: the texture that tells a shirt from a pullover
    is gone, the shape stays);
  - inverted: colours inverted (dark clothes on white, nearer to ImageNet's photographs, but every
    pixel statistic moves);
  - few-shot: 5 training images a class, fashion's validation images.
- handwritten digits (scikit-learn's `load_digits`, the UCI optdigits test set; CC BY 4.0): 8x8
  grayscale, 10 classes, far below the model's 224 px.
  - digits; digits-few-shot: 5 training images a class, digits' validation images.
- faces (scikit-image's `data/lfw_subset.npy`: 100 faces of Labeled Faces in the Wild, Huang et
  al. 2007, and 100 non-face patches, 25 px grayscale; BSD-3 as scikit-image ships it): face or
  not, 70 training and 30 validation images a class.
- textures (scikit-image's `data/brick.png`, `grass.png`, `gravel.png`, 512 px grayscale
  photographs; public domain / CC0 as scikit-image's data README lists them): 32 px crops, 3
  classes; training crops from each photograph's top half, validation crops from its bottom half
  (no pixel is in both).
- where a thing is (Fashion-MNIST items on a 56 x 28 canvas, 250 training and 100 validation images
  a class; global pooling keeps what is there more than where, so frozen features read these badly):
  - side: one item of any class, in the left or the right half;
  - shoe-side: a shoe (sandal, sneaker, ankle boot) beside an item of another class: which side
    holds the shoe.

Install the sources first: `apt-get install dataset-fashion-mnist` and `pip install scikit-image`
(its data files only are read; scikit-learn is a dependency already).

Measured (`PROTOCOL`) by the text suite's `measure`, as the product delivers each choice: k = 0 is
the closed-form head on the frozen features of all training rows (what the search fits after a
head-only advice), and k = 1, 2 and all 16 blocks train from that head (LP-FT, as every search trial
starts; 3e-4 for the top blocks, 1e-4 for all; BatchNorm frozen, the trainer's default) for 3 epochs,
or more on small data until a run has seen MIN_EXAMPLES images (core.epochs_for, as the search's
default epoch range grows), with seeds 1 and 2 again for the best
fine-tuned k when it is within noise of the head; the pixel baseline
(advisor/_signals.py `pixel_predictions`, the model without pretraining) on all training rows.
The measured best choice is the cheapest within min_gain of the best, change-model when the
baseline is the best (benchmarks/advisor_suite.py `measured_choice`). The measurements are kept
in results/advisor_suite_images_measured.json while a task's data and the protocol hold, so a run
cut short goes on where it stopped.

The summary and the shipped calibration come from the text suite's code (benchmarks/advisor_suite.py
`calibrate_suite`, leave one task out): advisor/forecast_image.json, which the advisor reads for
image models, holds a fitted scale only when leave one task out it errs less than the raw forecast
and decides no worse, and fine-tuning pays on at least two tasks; otherwise it holds the raw
forecast (scale 1) with its interval. Close calls measured again on unseen images
(benchmarks/advisor_holdout_images.py) are judged there, as on text.

    python benchmarks/advisor_suite_images.py [--tasks NAME ...] [--measure-only] [--refit]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from advisor_suite import MIN_GAIN, _f, calibrate_suite, measure, summary, task_row, with_held_out  # noqa: E402
from advisor_suite import PROTOCOL as TEXT_PROTOCOL  # noqa: E402

from finetune_advisor.advisor import AdvisorConfig, advise  # noqa: E402
from finetune_advisor.advisor._signals import pixel_predictions  # noqa: E402
from finetune_advisor.core import MIN_EXAMPLES, DataConfig, library_versions, load_backbone, load_task, write_json_atomic  # noqa: E402


RESULTS = Path(__file__).resolve().parent / "results" / "advisor_suite_images.json"
MEASURED = RESULTS.with_name("advisor_suite_images_measured.json")
HELD_OUT = RESULTS.with_name("advisor_holdout_images.json")  # close calls measured again (advisor_holdout_images.py)
# the text suite's protocol (LP-FT from the closed-form head, extra seeds within noise) at the
# pilot's learning rates for a CNN, the search's default epochs raised on small data as its range
# is (every run sees >= MIN_EXAMPLES images), BatchNorm frozen as the trainer's default
PROTOCOL = {**TEXT_PROTOCOL, "epochs": 3, "lr_top": 3e-4, "lr_all": 1e-4, "min_examples": MIN_EXAMPLES,
            "batchnorm": "frozen"}
TRAIN, VALID, FEW = 50, 20, 5  # images a class
SIDE_TRAIN, SIDE_VALID = 250, 100  # images a class of the two-class position tasks (500 to train, as fashion)
INSTALL = "apt-get install dataset-fashion-mnist; pip install scikit-image"


def _save(image, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)


def _split_folders(folder: Path, name: str, images_by_class: dict[str, list], n_train: int) -> tuple[str, DataConfig]:
    """Write folder/name/{train,valid}/<label>/<n>.png: the first n_train images of each class to train."""
    for label, images in images_by_class.items():
        for n, image in enumerate(images):
            _save(image, folder / name / ("train" if n < n_train else "valid") / label / f"{n}.png")
    return str(folder / name / "train"), DataConfig(valid=str(folder / name / "valid"))


def _few_shot(folder: Path, name: str, source: str) -> tuple[str, DataConfig]:
    """The first FEW training images a class of task `source`, judged on its validation images."""
    for label_dir in sorted((folder / source / "train").iterdir()):
        for n in range(FEW):
            target = folder / name / label_dir.name / f"{n}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((label_dir / f"{n}.png").read_bytes())
    return str(folder / name), DataConfig(valid=str(folder / source / "valid"))


def _skimage_data() -> Path:
    spec = importlib.util.find_spec("skimage")  # the data files only: the package is not imported
    if spec is None:
        sys.exit(f"scikit-image is not installed: install the sources first ({INSTALL}).")
    return Path(spec.submodule_search_locations[0]) / "data"


def fashion_images():
    """(the bundled Fashion-MNIST task, every image's path, every image's label id), in the order
    the tasks draw from."""
    fashion = load_task("demo:fashion-mnist", DataConfig(test_fraction=0.0, valid_fraction=0.1))
    return fashion, list(fashion.train.texts) + list(fashion.valid.texts), np.r_[fashion.train.labels, fashion.valid.labels]


def look(name: str):
    """What a Fashion-MNIST task does to each image: blur (radius 1.5 px), inverted, or nothing."""
    from PIL import ImageFilter, ImageOps

    return {"blur": lambda im: im.filter(ImageFilter.GaussianBlur(1.5)), "inverted": ImageOps.invert}.get(
        name, lambda im: im)


def canvas(items: list, left: int | None, right: int | None):
    """A 56 x 28 canvas with item `left` in its left half and `right` in its right (None: empty);
    an item is a 28 px image or its path."""
    from PIL import Image

    image = Image.new("L", (56, 28))
    for i, x in ((left, 0), (right, 28)):
        if i is not None:
            item = items[i] if isinstance(items[i], Image.Image) else Image.open(items[i])
            image.paste(item.convert("L"), (x, 0))
    return image


def texture_photos() -> dict[str, np.ndarray]:
    """scikit-image's brick, grass and gravel photographs, grayscale uint8 [512, 512]."""
    from PIL import Image

    data = _skimage_data()
    return {name: np.asarray(Image.open(data / f"{name}.png").convert("L")) for name in ("brick", "grass", "gravel")}


def texture_crop(photo: np.ndarray, half: str, rng, side: int = 32):
    """A random side x side crop of `photo` lying in its top or bottom half (training crops come
    from the top, validation and held-out crops from the bottom: none shares a pixel across)."""
    from PIL import Image

    rows = photo.shape[0] // 2
    y = (0 if half == "top" else rows) + int(rng.integers(0, rows - side))
    x = int(rng.integers(0, photo.shape[1] - side))
    return Image.fromarray(photo[y:y + side, x:x + side])


def build_tasks(folder: Path) -> dict[str, tuple[str, DataConfig]]:
    """Write each task as image folders; returns name -> (train folder, DataConfig)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    fashion, paths, labels = fashion_images()
    chosen = {fashion.labels[c]: rng.permutation(np.flatnonzero(labels == c))[:TRAIN + VALID]
              for c in range(fashion.num_labels)}
    tasks = {name: _split_folders(folder, name, {label: [look(name)(Image.open(paths[i]).convert("L")) for i in idx]
                                                 for label, idx in chosen.items()}, TRAIN)
             for name in ("fashion", "blur", "inverted")}
    tasks["few-shot"] = _few_shot(folder, "few-shot", "fashion")

    digits = load_digits()
    picked = {str(d): rng.permutation(np.flatnonzero(digits.target == d))[:TRAIN + VALID] for d in range(10)}
    tasks["digits"] = _split_folders(folder, "digits", {
        label: [Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)) for i in idx]
        for label, idx in picked.items()}, TRAIN)
    tasks["digits-few-shot"] = _few_shot(folder, "digits-few-shot", "digits")

    data = _skimage_data()
    lfw = (np.load(data / "lfw_subset.npy") * 255).astype(np.uint8)  # 100 faces, then 100 non-faces
    order = rng.permutation(100)
    tasks["faces"] = _split_folders(folder, "faces", {
        "face": [Image.fromarray(lfw[i]) for i in order], "not-face": [Image.fromarray(lfw[100 + i]) for i in order]},
        70)

    crops = {}
    for name, photo in texture_photos().items():
        crops[name] = ([texture_crop(photo, "top", rng) for _ in range(TRAIN)]
                       + [texture_crop(photo, "bottom", rng) for _ in range(VALID)])
    tasks["textures"] = _split_folders(folder, "textures", crops, TRAIN)

    # where a thing is, which a pooled feature blurs: Fashion-MNIST items on a 56 x 28 canvas
    rng = np.random.default_rng(1)  # draws of their own: the tasks above stay as they were
    shoes = np.flatnonzero(np.isin(labels, [fashion.labels.index(s) for s in ("sandal", "sneaker", "ankle-boot")]))
    others = np.setdiff1d(np.arange(len(paths)), shoes)

    n = SIDE_TRAIN + SIDE_VALID
    items = rng.choice(len(paths), 2 * n, replace=False)
    tasks["side"] = _split_folders(folder, "side", {"left": [canvas(paths, i, None) for i in items[:n]],
                                                    "right": [canvas(paths, None, i) for i in items[n:]]}, SIDE_TRAIN)
    shoe, other = rng.choice(shoes, 2 * n, replace=False), rng.choice(others, 2 * n, replace=False)
    tasks["shoe-side"] = _split_folders(folder, "shoe-side", {
        "shoe-left": [canvas(paths, shoe[k], other[k]) for k in range(n)],
        "shoe-right": [canvas(paths, other[k], shoe[k]) for k in range(n, 2 * n)]}, SIDE_TRAIN)
    return tasks


def content_key(task, root: Path) -> str:
    """sha256 of every image's bytes, path under `root` and label, per split: the task's identity
    across runs (`TaskData.fingerprint` also reads the files' temporary paths and times)."""
    import hashlib

    h = hashlib.sha256()
    for split in (task.train, task.valid):
        for path, label in zip(split.texts, split.labels):
            h.update(f"{split.name}\x1f{Path(path).relative_to(root)}\x1f{label}\x1f".encode())
            h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def ground_truth(backbone, task, key: str, cached: dict, say) -> dict:
    """The task's measurements (`PROTOCOL`) and pixel baseline, from `cached` when its data (`key`)
    and the protocol are the same."""
    if cached.get("fingerprint") == key and cached.get("protocol") == PROTOCOL:
        return cached
    t0 = time.perf_counter()
    measured = measure(backbone, task, say, PROTOCOL)
    pixels, _, _ = pixel_predictions(task.train.texts, task.train.labels, task.valid.texts)
    return {"fingerprint": key, "protocol": PROTOCOL, "measured": measured,
            "baseline": float(np.mean(pixels == task.valid.labels)), "measure_seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", help="run only these tasks, in this order (default: all)")
    parser.add_argument("--measure-only", action="store_true",
                        help=f"measure the ground truth of the tasks (kept in {MEASURED.name}) and stop")
    parser.add_argument("--refit", action="store_true",
                        help="no training: recompute the summary of the last results and refit "
                             "advisor/forecast_image.json")
    args = parser.parse_args(argv)
    if args.refit:
        record = json.loads(RESULTS.read_text())
        with_held_out(record["tasks"], HELD_OUT, MEASURED)
        record["summary"], record["calibration"] = calibrate_suite(record["tasks"], "image")
        write_json_atomic(RESULTS, record)
        print(json.dumps(record["summary"], indent=2))
        return
    backbone = load_backbone("demo:efficientnet-lite0")
    cache = json.loads(MEASURED.read_text()) if MEASURED.is_file() else {}
    old = {r["task"]: r for r in json.loads(RESULTS.read_text()).get("tasks", [])} if RESULTS.is_file() else {}
    results, record = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tasks = build_tasks(Path(tmp))
        order = {name: i for i, name in enumerate(args.tasks or ())}  # --tasks also says the order
        for name, (path, dconfig) in sorted(tasks.items(), key=lambda item: order.get(item[0], len(order))):
            task = load_task(path, dconfig)
            key = content_key(task, Path(tmp))
            if args.tasks and name not in args.tasks:
                if name in old and old[name].get("fingerprint") == key:
                    results.append(old[name])  # a task not rerun keeps its last row
                continue
            say = lambda msg, name=name: print(f"  {name}: {msg}", file=sys.stderr, flush=True)  # noqa: E731
            cache[name] = ground_truth(backbone, task, key, cache.get(name, {}), say)
            # after each task, into what is on disk: a run cut short keeps what it measured, and runs
            # of other tasks beside this one (--tasks) keep theirs
            on_disk = json.loads(MEASURED.read_text()) if MEASURED.is_file() else {}
            write_json_atomic(MEASURED, {**on_disk, name: cache[name]})
            measured = {int(k): v for k, v in cache[name]["measured"].items()}
            if args.measure_only:
                print(f"{name:<16} " + "  ".join(f"k={k} {m['accuracy']:.3f}" for k, m in measured.items())
                      + f"  pixels {cache[name]['baseline']:.3f}", flush=True)
                continue
            t0 = time.perf_counter()
            advice = advise(backbone, task, AdvisorConfig(min_gain=MIN_GAIN), progress=False).to_json()
            advisor_seconds = time.perf_counter() - t0
            row = task_row(name, task, advice, measured, cache[name]["baseline"], advisor_seconds, backbone.num_blocks)
            row["fingerprint"] = key
            row["shift"] = {key: advice["shift"].get(key) for key in
                            ("size_ratio", "grayscale_share", "normalisation_gap", "contrast_ratio", "effective_rank")}
            results.append(row)
            print(f"{name:<16} advice {row['decision']:<12} measured {row['measured_choice']:<12} "
                  f"ft predicted {_f(row['predicted_fine_tune'])} measured {row['measured_fine_tune']:.3f} "
                  f"(k={row['measured_best_k']})  head {row['measured_head']:.3f}  probe {row['probe']:.3f}  "
                  f"pixels {row['measured_ngram']:.3f}  advisor {advisor_seconds:.0f}s", flush=True)
            record = {"benchmark": "advisor_suite_images", "model": "demo:efficientnet-lite0", "min_gain": MIN_GAIN,
                      "protocol": PROTOCOL, "summary": summary(results), "tasks": results,
                      "complete": len(results) == len(tasks), "versions": library_versions(),
                      "targets": {"tasks": ">= 8", "decision_agreement": ">= 0.85", "kendall_tau": ">= 0.7",
                                  "median_abs_error": "<= 0.04", "interval_coverage": ">= 0.8"}}
            write_json_atomic(RESULTS, record)  # after each task: a long run keeps what it measured
    if record:
        with_held_out(results, HELD_OUT, MEASURED)
        record["summary"], record["calibration"] = calibrate_suite(results, "image")
        write_json_atomic(RESULTS, record)
        print(json.dumps(record["summary"], indent=2))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
