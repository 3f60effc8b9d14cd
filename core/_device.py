"""Device and precision choice, and giving memory back between runs."""

from __future__ import annotations

import contextlib
import functools
import gc

from ._errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto"):
    """The torch device for `name`: "auto" picks cuda > mps > cpu.

    Raises:
        InputError: an unknown name, or a device this machine does not have.
    """
    import torch

    if name not in DEVICES and not name.startswith("cuda:"):
        raise InputError(f"--device '{name}' is not a device. Use one of: {', '.join(DEVICES)} (or cuda:N).")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device '{name}' was asked for but torch sees no CUDA GPU here. "
                         "Use --device auto or cpu, or install a CUDA build of torch.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device 'mps' was asked for but this machine has no MPS. Use --device auto or cpu.")
    return torch.device(name)


def autocast_dtype(device):
    """Mixed-precision dtype for training on `device`: bf16 where the GPU supports it, else fp16;
    None (full fp32) on the CPU and MPS, where autocast brings little and costs accuracy."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device, dtype):
    """An autocast context for `dtype`, or a no-op when dtype is None."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def release_memory() -> None:
    """Drop unreachable tensors, hand cached GPU blocks back and, on glibc, return the freed heap
    to the system (malloc_trim), so repeated runs stay flat instead of fragmenting the heap."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _malloc_trim()


@functools.cache
def _libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, Windows, musl without the symbol)
        return None


def _malloc_trim() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def set_threads(n: int) -> None:
    """Let torch use `n` CPU threads in this process (several workers share the cores)."""
    import torch

    torch.set_num_threads(max(1, n))


def gpu_count() -> int:
    """Number of CUDA GPUs torch sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is running out of memory, on the GPU or the host."""
    import torch

    kinds = (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None), MemoryError)
    return isinstance(error, tuple(k for k in kinds if k is not None))
