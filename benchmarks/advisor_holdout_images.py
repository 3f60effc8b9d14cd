"""Benchmark: are the image suite's close calls right on images the suite never scored?

The image counterpart of benchmarks/advisor_holdout.py (read it first): the image suite's close
calls (`advisor_suite.close_call`) whose source holds unseen images of every class are measured
again, the same training images by the same protocol (advisor_suite_images.PROTOCOL; the pixel
baseline too), on HELD_OUT_ROWS unseen images made the same way:
- fashion, blur, inverted, few-shot: bundled Fashion-MNIST images outside the 700 the suite draws
  for them (an image counts as seen when its pixels equal one the task holds), 100 a class, with
  the task's look (blur, inversion);
- side: 500 left and 500 right canvases of items outside the task's 1,000.
faces (all 200 images of scikit-image's subset are used) and textures (its crops come from the
whole of each photograph) have none to spare. The image suite's summary judges these tasks'
decisions by the held-out best choice while their images are the same (the suite's content key).

    python benchmarks/advisor_holdout_images.py   # writes benchmarks/results/advisor_holdout_images.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from advisor_holdout import judge, report, say  # noqa: E402
from advisor_suite import close_call  # noqa: E402
from advisor_suite_images import (PROTOCOL, RESULTS, _save, build_tasks, canvas, content_key,  # noqa: E402
                                  fashion_images, look, measure)

from finetune_advisor.advisor._signals import pixel_predictions  # noqa: E402
from finetune_advisor.core import DataConfig, library_versions, load_backbone, load_task, write_json_atomic  # noqa: E402

OUT = RESULTS.with_name("advisor_holdout_images.json")
HELD_OUT_ROWS = 1000
SPARE = ("fashion", "blur", "inverted", "few-shot", "side")  # the tasks built from bundled Fashion-MNIST


def _pixels(path: Path, box=None) -> bytes:
    from PIL import Image

    image = Image.open(path).convert("L")
    return (image.crop(box) if box else image).tobytes()


def unseen_images(folder: Path, name: str, rng) -> dict[str, list]:
    """HELD_OUT_ROWS images of task `name`'s kind, as {label: [PIL image]}, from bundled Fashion-MNIST
    images that no image of the task holds."""
    from PIL import Image

    fashion, paths, labels = fashion_images()
    if name == "side":
        boxes = [(0, 0, 28, 28), (28, 0, 56, 28)]
        seen = {_pixels(p, box) for p in (folder / "side").rglob("*.png") for box in boxes}
    else:
        seen = {_pixels(p) for p in (folder / "fashion").rglob("*.png")}
    free = [i for i in rng.permutation(len(paths)) if _pixels(paths[i]) not in seen]
    if name == "side":
        half = HELD_OUT_ROWS // 2
        return {"left": [canvas(paths, i, None) for i in free[:half]],
                "right": [canvas(paths, None, i) for i in free[half:2 * half]]}
    per_class = HELD_OUT_ROWS // fashion.num_labels
    return {fashion.labels[c]: [look(name)(Image.open(paths[i]).convert("L"))
                                for i in [i for i in free if labels[i] == c][:per_class]]
            for c in range(fashion.num_labels)}


def main() -> None:
    suite = {row["task"]: row for row in json.loads(RESULTS.read_text())["tasks"]}
    close = [name for name, row in suite.items() if close_call(row)]
    print(f"close calls: {', '.join(close)}; without unseen images: {', '.join(set(close) - set(SPARE)) or 'none'}")
    backbone = load_backbone("demo:efficientnet-lite0")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tasks = build_tasks(folder)
        for name in (name for name in close if name in SPARE):
            task = load_task(*tasks[name])
            for label, images in unseen_images(folder, name, np.random.default_rng(3)).items():
                for n, image in enumerate(images):
                    _save(image, folder / "held-out" / name / label / f"{n}.png")
            unseen = load_task(tasks[name][0], DataConfig(valid=str(folder / "held-out" / name)))
            t0 = time.perf_counter()
            measured = measure(backbone, unseen, say(name), PROTOCOL)
            pixels, _, _ = pixel_predictions(unseen.train.texts, unseen.train.labels, unseen.valid.texts)
            results.append(judge(suite[name], content_key(task, folder), len(unseen.valid), measured,
                                 float(np.mean(pixels == unseen.valid.labels)), time.perf_counter() - t0))
            write_json_atomic(OUT, {"benchmark": "advisor_holdout_images", "model": "demo:efficientnet-lite0",
                                    "protocol": PROTOCOL, "held_out": HELD_OUT_ROWS, "tasks": results,
                                    "versions": library_versions()})
    report(results, OUT)


if __name__ == "__main__":
    main()
