"""Benchmark: are the image suite's close calls right on images the suite never scored?

The image counterpart of benchmarks/advisor_holdout.py (read it first): the image suite's close
calls (`advisor_suite.close_call`) whose source holds unseen images of every class are measured
again, the same training images by the same protocol (advisor_suite_images.PROTOCOL, in fp32; the
pixel baseline too), on unseen images made the same way:
- fashion, blur, inverted, few-shot: 5,000 images of Fashion-MNIST's official test file (Debian's
  dataset-fashion-mnist, `--fashion-mnist`; the suite's images all come from the training file),
  500 a class, with the task's look (blur, inversion);
- side: 2,500 left and 2,500 right canvases of test images, each image once;
- textures: 1,000 fresh 32 px crops a class from each photograph's bottom half, where the task's
  validation crops come from (its training crops come from the top half, so none shares a pixel
  with them).
faces (all 200 images of scikit-image's subset are used) has none to spare. 5,000 rows put the
noise of a difference of two accuracies (2 standard errors) at about 0.017 near 0.8, against 0.04
on the suite's 200 validation images. The image suite's summary judges these tasks' decisions by
the held-out best choice while their images are the same (the suite's content key: the tasks are
drawn by numpy's generators, and another numpy release may draw other images, whose rows are then
not used).

A task takes about 15 minutes on 2 CPU cores; on a GPU, several tasks run at once (`--tasks`,
`--out`: one file each, their rows then put together).

    python benchmarks/advisor_holdout_images.py [--tasks NAME ...] [--rows N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "demo"))  # the reader of Fashion-MNIST's files

from advisor_holdout import judge, report, say  # noqa: E402
from advisor_suite import close_call  # noqa: E402
from advisor_suite_images import (PROTOCOL, RESULTS, _save, build_tasks, canvas, content_key, look,  # noqa: E402
                                  measure, texture_crop, texture_photos)

from finetune_advisor.advisor._signals import pixel_predictions  # noqa: E402
from finetune_advisor.core import DataConfig, library_versions, load_backbone, load_task, write_json_atomic  # noqa: E402
from build_fashion_mnist import read_idx  # noqa: E402

from finetune_advisor.core._demos import CLASSES  # noqa: E402

OUT = RESULTS.with_name("advisor_holdout_images.json")
HELD_OUT_ROWS = 5000  # unseen images a Fashion-MNIST task: half the test file
TEXTURE_CROPS = 1000  # unseen crops a texture (scaled by --rows alike)
SPARE = ("fashion", "blur", "inverted", "few-shot", "side", "textures")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def fashion_test(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's official test file: uint8 images [10000, 28, 28] and their class ids (CLASSES)."""
    if not (Path(folder) / "t10k-images-idx3-ubyte.gz").is_file():
        sys.exit(f"{folder}/t10k-images-idx3-ubyte.gz is missing: apt-get install dataset-fashion-mnist, "
                 "or pass --fashion-mnist FOLDER.")
    return read_idx(folder, "t10k")


def unseen_images(name: str, test: tuple[np.ndarray, np.ndarray], rows: int, rng) -> dict[str, list]:
    """`rows` unseen images of task `name`'s kind (textures: TEXTURE_CROPS a class, scaled alike), as
    {label: [PIL image]}."""
    from PIL import Image

    if name == "textures":
        per_class = TEXTURE_CROPS * rows // HELD_OUT_ROWS
        return {texture: [texture_crop(photo, "bottom", rng) for _ in range(per_class)]
                for texture, photo in texture_photos().items()}
    images, labels = test
    tiles = [Image.fromarray(image) for image in images]
    if name == "side":
        order = rng.permutation(len(tiles))[:rows]
        half = len(order) // 2
        return {"left": [canvas(tiles, i, None) for i in order[:half]],
                "right": [canvas(tiles, None, i) for i in order[half:]]}
    per_class = rows // len(CLASSES)
    return {CLASSES[c]: [look(name)(tiles[i]) for i in np.flatnonzero(labels == c)[:per_class]]
            for c in range(len(CLASSES))}


def device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", help="measure only these close calls; the others keep their last rows")
    parser.add_argument("--rows", type=int, default=HELD_OUT_ROWS,
                        help=f"unseen images a task (default {HELD_OUT_ROWS:,}; fewer for a quick check)")
    parser.add_argument("--fashion-mnist", default=FASHION_MNIST, help=f"Fashion-MNIST's files (default {FASHION_MNIST})")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the rows go (default {OUT})")
    args = parser.parse_args(argv)
    suite = {row["task"]: row for row in json.loads(RESULTS.read_text())["tasks"]}
    close = [name for name, row in suite.items() if close_call(row)]
    print(f"close calls: {', '.join(close)}; without unseen images: {', '.join(set(close) - set(SPARE)) or 'none'}")
    test = fashion_test(args.fashion_mnist)
    backbone = load_backbone("demo:efficientnet-lite0", device="auto")
    kept = json.loads(args.out.read_text())["tasks"] if args.out.is_file() and args.tasks else []
    results = [row for row in kept if row["task"] not in args.tasks] if args.tasks else []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tasks = build_tasks(folder)
        for name in (n for n in close if n in SPARE and (not args.tasks or n in args.tasks)):
            task = load_task(*tasks[name])
            for label, images in unseen_images(name, test, args.rows, np.random.default_rng(3)).items():
                for n, image in enumerate(images):
                    _save(image, folder / "held-out" / name / label / f"{n}.png")
            unseen = load_task(tasks[name][0], DataConfig(valid=str(folder / "held-out" / name)))
            t0 = time.perf_counter()
            measured = measure(backbone, unseen, say(name), PROTOCOL, precision="fp32")
            pixels, _, _ = pixel_predictions(unseen.train.texts, unseen.train.labels, unseen.valid.texts)
            results.append({**judge(suite[name], content_key(task, folder), len(unseen.valid), measured,
                                    float(np.mean(pixels == unseen.valid.labels)), time.perf_counter() - t0),
                            "device": device_name(backbone.device)})
            write_json_atomic(args.out, {"benchmark": "advisor_holdout_images", "model": "demo:efficientnet-lite0",
                                         "protocol": PROTOCOL, "precision": "fp32", "tasks": results,
                                         "versions": library_versions()})
    report(results, args.out)


if __name__ == "__main__":
    main()
