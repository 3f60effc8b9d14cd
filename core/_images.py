"""Images: reading files, checking them, and the model's preprocessing, with numpy and Pillow only.

One preprocessing path serves training, the advisor and the deploy folder's predictor (which
imports this module and nothing heavier), so an exported model sees exactly the pixels it was
trained on. `ImageSpec` reads a Hugging Face `preprocessor_config.json` and repeats what the
slow (Pillow) image processors of transformers do:

1. convert to RGB (grayscale, palette and RGBA images alike; alpha is dropped);
2. resize: `size = {height, width}` exactly; `size = {shortest_edge: s}` keeps the aspect ratio
   with the short side at s, except ConvNeXt-style processors (`crop_pct`), which resize the short
   side to s / crop_pct and crop s x s (s < 384) or warp to s x s (s >= 384);
3. centre crop to `crop_size` when `do_center_crop`;
4. rescale (x * rescale_factor) and normalise ((x - mean) / std) per channel, channels first.

Steps 1-3 run once per image (`load_pixels`: uint8 [n, H, W, 3]); step 4 per batch (`normalize`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
PREPROCESSOR_FILE = "preprocessor_config.json"
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's: transformers' default


class ImageError(ValueError):
    """An image file that cannot be read; the message names the file and why."""


@dataclass(frozen=True)
class ImageSpec:
    """How a model wants its images (from its preprocessor_config.json).

    Attributes:
        resize: ("exact", h, w), ("shortest", s) or ("crop_pct", s, pct); None = no resizing.
        crop: (h, w) of the centre crop, or None.
        resample: Pillow resampling filter number (2 bilinear, 3 bicubic).
        rescale: factor applied to 0..255 values (None = none).
        mean, std: per-channel normalisation (None = none).
    """

    resize: tuple | None
    crop: tuple[int, int] | None
    resample: int = 2
    rescale: float | None = 1 / 255
    mean: tuple[float, ...] | None = _MEAN
    std: tuple[float, ...] | None = _STD
    config: dict = field(default_factory=dict, compare=False, repr=False)  # the raw processor config, saved back

    @classmethod
    def from_config(cls, cfg: dict) -> ImageSpec:
        """The spec of a transformers image-processor config (a preprocessor_config.json's dict)."""
        size = cfg.get("size")
        if isinstance(size, int):
            size = {"shortest_edge": size}
        resize = None
        if cfg.get("do_resize", True) and isinstance(size, dict):
            if "height" in size and "width" in size:
                resize = ("exact", int(size["height"]), int(size["width"]))
            elif "shortest_edge" in size and cfg.get("crop_pct") is not None and "ConvNext" in str(
                    cfg.get("image_processor_type", "")):
                resize = ("crop_pct", int(size["shortest_edge"]), float(cfg["crop_pct"]))
            elif "shortest_edge" in size:
                resize = ("shortest", int(size["shortest_edge"]))
        crop = cfg.get("crop_size")
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        crop = (int(crop["height"]), int(crop["width"])) if cfg.get("do_center_crop") and isinstance(crop, dict) else None
        norm = cfg.get("do_normalize", True)
        return cls(resize, crop, int(cfg.get("resample", 2)),
                   float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else None,
                   tuple(map(float, cfg.get("image_mean", _MEAN))) if norm else None,
                   tuple(map(float, cfg.get("image_std", _STD))) if norm else None,
                   dict(cfg))

    @classmethod
    def from_folder(cls, folder: str | Path) -> ImageSpec:
        return cls.from_config(json.loads((Path(folder) / PREPROCESSOR_FILE).read_text(encoding="utf-8")))

    def to_config(self) -> dict:
        """The processor config this spec was read from (to save beside a model)."""
        return dict(self.config)

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every preprocessed image, or None when it depends on the image."""
        if self.crop:
            return self.crop
        if self.resize and self.resize[0] == "exact":
            return self.resize[1], self.resize[2]
        if self.resize and self.resize[0] == "crop_pct":
            return self.resize[1], self.resize[1]
        return None

    def pixels(self, image) -> np.ndarray:
        """Steps 1-3 on one Pillow image: uint8 [H, W, 3]."""
        from PIL import Image

        image = to_rgb(image)
        resample = Image.Resampling(self.resample)
        kind = self.resize[0] if self.resize else None
        if kind == "exact":
            image = image.resize((self.resize[2], self.resize[1]), resample)
        elif kind == "crop_pct" and self.resize[1] >= 384:
            image = image.resize((self.resize[1], self.resize[1]), resample)
        elif kind == "crop_pct":  # the short side to s / crop_pct, then the centre s x s
            s = self.resize[1]
            image = center_crop(_resize_short(image, int(s / self.resize[2]), resample), (s, s))
        elif kind == "shortest":
            image = _resize_short(image, self.resize[1], resample)
        if self.crop:
            image = center_crop(image, self.crop)
        return np.asarray(image, dtype=np.uint8)

    def pixel_values(self, paths) -> np.ndarray:
        """Steps 1-4 for the images at `paths`: the model's input, float32 [n, 3, H, W]."""
        return self.normalize(load_pixels(paths, self))

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Step 4 on uint8 [n, H, W, 3]: float32 [n, 3, H, W]."""
        x = pixels.astype(np.float32)
        if self.rescale is not None:
            x = x * np.float32(self.rescale)
        if self.mean is not None:
            x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _resize_short(image, short_side: int, resample):
    """Resize keeping the aspect ratio, the short side to `short_side` (the long side rounded down)."""
    w, h = image.size
    if w <= h:
        return image.resize((short_side, int(short_side * h / w)), resample)
    return image.resize((int(short_side * w / h), short_side), resample)


def to_rgb(image):
    """An RGB copy of a Pillow image; transparent pixels of RGBA/LA/palette images become white."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
        a = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(a.max()), 1.0)
        image = Image.fromarray(np.clip(a / top * 255, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def center_crop(image, size: tuple[int, int]):
    """The centre (h, w) of a Pillow image; padded with black where the image is smaller."""
    from PIL import Image

    h, w = size
    width, height = image.size
    if width < w or height < h:
        canvas = Image.new("RGB", (max(w, width), max(h, height)))
        canvas.paste(image, ((canvas.width - width) // 2, (canvas.height - height) // 2))
        image, (width, height) = canvas, canvas.size
    top, left = int((height - h) / 2), int((width - w) / 2)
    return image.crop((left, top, left + w, top + h))


def open_image(path: str | Path):
    """The image at `path`, fully decoded.

    Raises:
        ImageError: missing, unreadable, truncated or not an image (the reason is named).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                raise ImageError(f"{path}: the image is empty (0 pixels)")
            return image.copy()
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: too many pixels (Pillow refuses it as a decompression bomb)") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data
        raise ImageError(f"{path}: cannot be decoded ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def thumbnail_uri(path: str | Path, size: int = 96) -> str | None:
    """The image at `path` as a PNG data URI at most `size` pixels a side (for a table cell), or
    None when it cannot be read."""
    import base64
    import io

    try:
        image = to_rgb(open_image(path))
    except ImageError:
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_problems(paths, *, progress: bool = False) -> list[str | None]:
    """For each path, why its image cannot be decoded, or None when it can. Decoding runs on a few
    threads (Pillow releases the GIL while it decodes)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    def problem(path):
        try:
            open_image(path)
        except ImageError as e:
            return str(e)
        return None

    paths = list(paths)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        return list(tqdm(pool.map(problem, paths), total=len(paths), desc="checking images", unit="image",
                         leave=False, disable=not progress))


def unreadable_message(problems: list[str | None]) -> str:
    """"N of M image(s) cannot be read: ..." naming the first 10 of `image_problems`' reasons."""
    bad = [why for why in problems if why]
    return (f"{len(bad)} of {len(problems)} image(s) cannot be read: {'; '.join(bad[:10])}"
            + (f"; and {len(bad) - 10} more" if len(bad) > 10 else ""))


def load_pixels(paths, spec: ImageSpec) -> np.ndarray:
    """Steps 1-3 for every path: uint8 [n, H, W, 3] (the spec must fix the output size).

    Raises:
        ImageError: the first file that cannot be read.
    """
    size = spec.output_size
    if size is None:
        raise ValueError("this image processor gives images of varying size; batches need one size")
    out = np.empty((len(paths), size[0], size[1], 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = spec.pixels(open_image(path))
    return out


def image_stats(paths, *, limit: int = 300) -> dict:
    """Sizes, modes and pixel statistics of (up to `limit` of) the images: what decides transfer.

    Returns {"images", "width": [min, median, max], "height": [...], "modes": {mode: count},
    "grayscale_share", "mean": [r, g, b], "std": [r, g, b]} (pixel values in [0, 1]).
    """
    widths, heights, modes, means, squares = [], [], {}, [], []
    gray = 0
    for path in list(paths)[:limit]:
        image = open_image(path)
        widths.append(image.width)
        heights.append(image.height)
        modes[image.mode] = modes.get(image.mode, 0) + 1
        gray += image.mode in ("L", "LA", "1", "I", "I;16", "F")
        small = to_rgb(image)
        small.thumbnail((64, 64))
        a = np.asarray(small, dtype=np.float64).reshape(-1, 3) / 255
        means.append(a.mean(0))
        squares.append((a ** 2).mean(0))
    n = len(widths)
    mean = np.mean(means, 0)
    std = np.sqrt(np.maximum(np.mean(squares, 0) - mean ** 2, 0))
    return {"images": n, "width": [int(min(widths)), int(np.median(widths)), int(max(widths))],
            "height": [int(min(heights)), int(np.median(heights)), int(max(heights))], "modes": modes,
            "grayscale_share": gray / n, "mean": [round(float(v), 4) for v in mean],
            "std": [round(float(v), 4) for v in std]}
