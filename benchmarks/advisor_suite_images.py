"""Benchmark: the advisor's advice on image tasks against what training actually gives, in one run.

The model is demo:efficientnet-lite0 (ImageNet, 224 px, 16 blocks); the tasks are built from
demo:fashion-mnist (28 px grayscale clothing, 10 classes), 50 training and 20 validation images a
class unless said:
- fashion: the images as they are;
- blur: a strong Gaussian blur (radius 1.5 px on 28 px images: the texture that tells a shirt
  from a pullover is gone, the shape stays);
- inverted: colours inverted (light clothes on black become dark clothes on white, nearer to
  ImageNet's photographs, but every pixel statistic moves);
- few-shot: 5 training images a class, the same 20 validation images a class.

Measured, as in benchmarks/advisor_suite.py: training with k = 0 (a head on frozen features),
1, 2 and all 16 blocks unfrozen, a few epochs each (one setting per k stands in for the search);
the measured best choice is the cheapest within min_gain of the best (the advisor's rule). On
the first task each k also trains one epoch without the frozen-layer cache: the cache ratio is
that epoch's seconds over a cached epoch's (k = 16 has nothing frozen to cache).

    python benchmarks/advisor_suite_images.py   # writes benchmarks/results/advisor_suite_images.json
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from advisor_suite import MIN_GAIN, _f, kendall_tau, task_row  # noqa: E402

from finetune_advisor.advisor import AdvisorConfig, advise  # noqa: E402
from finetune_advisor.advisor._signals import pixel_predictions  # noqa: E402
from finetune_advisor.core import DataConfig, TrainConfig, library_versions, load_backbone, load_task, train, write_json_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "advisor_suite_images.json"
TRAIN, VALID, FEW = 50, 20, 5  # images a class


def build_tasks(folder: Path) -> dict[str, tuple[str, DataConfig]]:
    """Write each task as image folders DIR/<label>/<n>.png; returns name -> (train folder, DataConfig)."""
    from PIL import Image, ImageFilter, ImageOps

    fashion = load_task("demo:fashion-mnist", DataConfig(test_fraction=0.0))
    paths = list(fashion.train.texts) + list(fashion.valid.texts)
    labels = np.r_[fashion.train.labels, fashion.valid.labels]
    rng = np.random.default_rng(0)
    chosen = {c: rng.permutation(np.flatnonzero(labels == c))[:TRAIN + VALID] for c in range(fashion.num_labels)}
    looks = {"fashion": lambda im: im, "blur": lambda im: im.filter(ImageFilter.GaussianBlur(1.5)),
             "inverted": ImageOps.invert}
    tasks = {}
    for name, look in looks.items():
        for c, idx in chosen.items():
            for n, i in enumerate(idx):
                split = "train" if n < TRAIN else "valid"
                target = folder / name / split / fashion.labels[c] / f"{n}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                look(Image.open(paths[i]).convert("L")).save(target)
        tasks[name] = (str(folder / name / "train"), DataConfig(valid=str(folder / name / "valid")))
    for c in range(fashion.num_labels):  # few-shot: the first FEW training images of fashion
        label = fashion.labels[c]
        target = folder / "few-shot" / label
        target.mkdir(parents=True)
        for n in range(FEW):
            (target / f"{n}.png").write_bytes((folder / "fashion" / "train" / label / f"{n}.png").read_bytes())
    tasks["few-shot"] = (str(folder / "few-shot"), DataConfig(valid=str(folder / "fashion" / "valid")))
    return tasks


def measure(backbone, task, k: int, *, cache: str = "memory", epochs: int | None = None):
    """Train k blocks (one setting per k: a head alone learns fast, the whole model slowly)."""
    full = k == backbone.num_blocks
    config = TrainConfig(unfrozen_layers=k, epochs=epochs or (20 if k == 0 else 3), patience=0, cache=cache,
                         learning_rate=1e-4 if full else 3e-4, head_lr_multiplier=30 if k == 0 else 10,
                         batch_size=16, seed=0)
    return train(backbone, task, config, progress=False)


def main() -> None:
    backbone = load_backbone("demo:efficientnet-lite0")
    ks = (0, 1, 2, backbone.num_blocks)
    results, cache_ratio = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, dconfig) in build_tasks(Path(tmp)).items():
            task = load_task(path, dconfig)
            t0 = time.perf_counter()
            advice = advise(backbone, task, AdvisorConfig(min_gain=MIN_GAIN), progress=False).to_json()
            advisor_seconds = time.perf_counter() - t0
            measured = {}
            for k in ks:
                result = measure(backbone, task, k)
                measured[k] = {"accuracy": result.best_valid_accuracy, "seconds_per_epoch": result.epoch_seconds,
                               "cache_seconds": result.cache_seconds}
                if not cache_ratio and k < backbone.num_blocks:  # the first task: the same k without the cache
                    measured[k]["uncached_seconds_per_epoch"] = measure(backbone, task, k, cache="off",
                                                                        epochs=1).epoch_seconds
            if not cache_ratio:
                cache_ratio = {str(k): m["uncached_seconds_per_epoch"] / m["seconds_per_epoch"]
                               for k, m in measured.items() if "uncached_seconds_per_epoch" in m}
            pixels, _, _ = pixel_predictions(task.train.texts, task.train.labels, task.valid.texts)
            baseline = float(np.mean(pixels == task.valid.labels))  # the model without pretraining, on every row
            row = task_row(name, task, advice, measured, baseline, advisor_seconds, backbone.num_blocks)
            row["shift"] = {key: advice["shift"].get(key) for key in
                            ("size_ratio", "grayscale_share", "normalisation_gap", "contrast_ratio", "effective_rank")}
            results.append(row)
            print(f"{name:<9} advice {row['decision']:<10} measured {row['measured_choice']:<10} "
                  f"ft predicted {_f(row['predicted_fine_tune'])} measured {row['measured_fine_tune']:.3f} "
                  f"(k={row['measured_best_k']})  head {row['measured_head']:.3f}  probe {row['probe']:.3f}  "
                  f"advisor {advisor_seconds:.0f}s = "
                  f"{row['advisor_over_epoch']:.1f} full epochs", flush=True)
            record = summary(results, cache_ratio)  # written after each task: a long run keeps what it measured
            write_json_atomic(RESULTS, record)
    tau = record["kendall_tau_fine_tune_accuracy"]
    print("frozen-layer cache, uncached / cached epoch seconds per k: "
          + ", ".join(f"k={k}: {r:.1f}x" for k, r in cache_ratio.items()))
    print(f"Kendall tau (predicted vs measured fine-tuned accuracy): {tau}")
    print(f"decisions matching the measured best choice: {record['decisions_agree']}/{len(results)}")
    print(f"wrote {RESULTS}")


def summary(results: list[dict], cache_ratio: dict) -> dict:
    pairs = [(r["predicted_fine_tune"], r["measured_fine_tune"]) for r in results if r["predicted_fine_tune"] is not None]
    return {"benchmark": "advisor_suite_images", "model": "demo:efficientnet-lite0", "data": "demo:fashion-mnist",
            "min_gain": MIN_GAIN, "tasks": results, "complete": len(results) == 4,
            "kendall_tau_fine_tune_accuracy": kendall_tau(pairs),
            "decisions_agree": sum(r["agree"] for r in results), "cache_ratio_per_k": cache_ratio,
            "median_abs_error_fine_tune": float(np.median([abs(p - m) for p, m in pairs])) if pairs else None,
            "versions": library_versions()}


if __name__ == "__main__":
    main()
