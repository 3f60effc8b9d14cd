"""demo:fashion-mnist: 3,000 Fashion-MNIST images shipped in core/demo/fashion-mnist.npz (MIT;
source and licence in core/demo/FASHION-MNIST-LICENSE), written once as PNG files into an image
folder under the cache directory, so the demo reads like any user's DIR/<label>/<image> folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

NPZ = Path(__file__).with_name("demo") / "fashion-mnist.npz"
CLASSES = ("t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")


def fashion_mnist_folder() -> Path:
    """The demo's image folder (written on first use; a finished folder is never rewritten)."""
    from PIL import Image

    from ._rundir import default_cache_dir

    data = np.load(NPZ)
    images, labels = data["images"], data["labels"]
    folder = default_cache_dir() / "demo" / f"fashion-mnist-{len(images)}"
    if (folder / "complete").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".fashion-mnist-"))
    try:
        for i, (image, label) in enumerate(zip(images, labels)):
            target = tmp / CLASSES[int(label)] / f"{i:05d}.png"
            target.parent.mkdir(exist_ok=True)
            Image.fromarray(image).save(target)
        (tmp / "complete").write_text("")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
