"""Rebuild fashion-mnist.npz from the Fashion-MNIST training files (Debian's dataset-fashion-mnist
package puts them in /usr/share/datasets/fashion-mnist): 300 images of each of the 10 classes,
drawn with seed 0, stored as uint8 [3000, 28, 28] images and int labels, compressed.

    python core/demo/build_fashion_mnist.py [/usr/share/datasets/fashion-mnist]
"""

import gzip
import sys
from pathlib import Path

import numpy as np

PER_CLASS = 300


def read_idx(folder: str, part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's `part` ("train" or "t10k") from its gzipped idx files in `folder`: uint8
    images [n, 28, 28] and their class ids."""
    root = Path(folder)
    images = np.frombuffer(gzip.decompress((root / f"{part}-images-idx3-ubyte.gz").read_bytes()), np.uint8, offset=16)
    labels = np.frombuffer(gzip.decompress((root / f"{part}-labels-idx1-ubyte.gz").read_bytes()), np.uint8, offset=8)
    return images.reshape(-1, 28, 28), labels


def main(folder: str = "/usr/share/datasets/fashion-mnist") -> None:
    images, labels = read_idx(folder)
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), PER_CLASS, replace=False)
                                   for c in range(10)]))
    out = Path(__file__).with_name("fashion-mnist.npz")
    np.savez_compressed(out, images=images[keep], labels=labels[keep].astype(np.int64))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {len(keep)} images)")


if __name__ == "__main__":
    main(*sys.argv[1:])
