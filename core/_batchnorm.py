"""BatchNorm as transfer learning keeps it.

While a network with BatchNorm fine-tunes, its BatchNorm layers run in inference mode by default
(`TrainConfig.batchnorm="frozen"`): the running statistics stay the pretrained ones and only the
scale and shift learn. Statistics re-estimated batch by batch from a few hundred images of another
domain are noisy and far from what the later layers were trained on, and the network collapses at
evaluation; keeping BatchNorm frozen is the practice of transfer learning (Keras' transfer-learning
guide: keep BatchNormalization layers in inference mode when unfreezing; timm's
`freeze_batch_norm_2d`). `batchnorm="train"` re-estimates them, from batches of at least
`MIN_BATCHNORM_ROWS` rows only (core._train).
"""

from __future__ import annotations


def batchnorms(model) -> list:
    """The BatchNorm modules of `model` (1d, 2d, 3d and their sync variants)."""
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def torch_momentum(model) -> list[str]:
    """Put every BatchNorm momentum in PyTorch's convention; returns what was changed, one sentence.

    PyTorch's momentum is the weight of the new batch in the running statistics (default 0.1);
    TensorFlow's is the weight of the old ones (0.99). A config carried over from TensorFlow (Hugging
    Face's EfficientNet: `batch_norm_momentum=0.99`) hands 0.99 to `nn.BatchNorm2d`, whose running
    statistics then become the last batch's. A momentum above 0.5 can only be TensorFlow's, so it
    becomes 1 - m, in the modules and in the config (the model saves and reloads converted); the
    same fix as torchvision's MaxViT (pytorch/vision issue 8250).
    """
    converted = {}
    for module in batchnorms(model):
        m = module.momentum
        if m is not None and m > 0.5:
            module.momentum = round(1.0 - m, 12)
            converted[m] = converted.get(m, 0) + 1
    config = getattr(model, "config", None)
    for key in ("batch_norm_momentum", "bn_momentum"):
        value = getattr(config, key, None)
        if isinstance(value, float) and value > 0.5:
            setattr(config, key, round(1.0 - value, 12))
    return [f"BatchNorm momentum {m:g} (TensorFlow's convention) of {n} layer(s) became {1 - m:g} in PyTorch's"
            for m, n in converted.items()]
