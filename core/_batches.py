"""How training batches are made: texts grouped by length (less padding), images augmented."""

from __future__ import annotations

import numpy as np
import torch


def length_grouped_batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, rng,
                           group: int = 50) -> list[np.ndarray]:
    """Batches of rows of similar length from a random `order`: the order is cut into groups of
    `group` batches, each group sorted longest first and cut into batches, then all batches are
    shuffled. transformers' `group_by_length` (LengthGroupedSampler) sorts the same groups of 50
    batches; shuffling the batches as well keeps long and short batches from alternating in a
    fixed pattern. A batch then pads to nearly its own texts' length instead of the longest of a
    random draw."""
    size = group * batch_size
    batches = []
    for s in range(0, len(order), size):
        chunk = order[s:s + size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def augment_pixels(x, generator):
    """A random left-right flip (p = 1/2) and a random crop back to size from the images padded by
    1/8 of their side with zeros (the normalised mean colour), drawn per image from `generator`:
    the standard light augmentation of ImageNet-style training. x: [n, 3, h, w]."""
    n, _, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    flip = torch.rand(n, generator=generator) < 0.5
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
    padded = torch.nn.functional.pad(torch.where(flip.view(n, 1, 1, 1).to(x.device), x.flip(-1), x), (pad,) * 4)
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
    return out.contiguous(memory_format=torch.channels_last)
