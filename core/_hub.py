"""Loading Hugging Face objects from an id, a local folder or a bundled demo: the model source,
the tokenizer, a sequence classifier, the files' fingerprint, transformers kept quiet.

Every load goes through here with `trust_remote_code=False` unless the user asks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ._demos import resolve_model_source
from ._errors import InputError, first_line
from ._quiet import quiet_transformers

_EDGE = 1 << 20  # bytes hashed at each end of a file


def max_positions(config, tokenizer) -> int:
    """The longest input a model (its config) and tokenizer take, in tokens."""
    limit = getattr(config, "max_position_embeddings", 512) or 512
    if config.model_type in ("roberta", "xlm-roberta"):
        limit -= 2  # positions start after the padding index
    return int(min(limit, getattr(tokenizer, "model_max_length", limit) or limit))


def _load_error(label: str, error: Exception, hint: str = "") -> InputError:
    """The InputError for a model that failed to load; says so plainly when it needs its own code,
    else gives the reason and `hint`."""
    text = str(error)
    if "trust_remote_code" in text or "custom code" in text:
        return InputError(f"{label} ships its own Python code, which finetune-advisor does not run (transformers' "
                          "trust_remote_code is off). Pick a model whose architecture transformers implements, or, "
                          "if you have read that code and trust it, load it in Python with trust_remote_code=True.")
    return InputError(f"{label} could not be loaded: {first_line(error)}.{hint}")


def load_tokenizer(name: str, *, trust_remote_code: bool = False, label: str | None = None):
    """The tokenizer of a model (hub id, folder or demo), never running code shipped with it unless
    `trust_remote_code` is set.

    Raises:
        InputError: the model is missing, cannot be read, or needs its own code.
    """
    from transformers import AutoConfig, AutoTokenizer

    source = resolve_model_source(name)
    label = label or f"--model '{name}'"
    try:
        AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)  # refuses custom code first
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise _load_error(label, e) from None


def load_sequence_classifier(path: str | Path, *, trust_remote_code: bool = False):
    """A transformers *ForSequenceClassification folder: (model in eval mode, tokenizer).

    Raises:
        InputError: the folder cannot be loaded (missing or truncated weights, custom code).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    label = f"the model in '{path}'"
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=torch.float32, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise _load_error(label, e) from None
    return model.eval(), tokenizer


def files_fingerprint(source: str) -> str:
    """sha256 over the model's files (name, size, modification time, first and last MiB).

    Cheap on multi-GB weights, yet it changes when a file is replaced, rewritten or edited. For
    a hub id, the files are those of its local snapshot; '' when there is no local copy.
    """
    folder = Path(source)
    if not folder.is_dir():
        from transformers.utils import cached_file

        try:
            config = cached_file(source, "config.json", _raise_exceptions_for_missing_entries=False,
                                 _raise_exceptions_for_connection_errors=False)
        except Exception:
            config = None
        if not config:
            return ""
        folder = Path(config).parent
    h = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        st = file.stat()
        h.update(f"{file.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        with open(file, "rb") as f:
            h.update(f.read(_EDGE))
            if st.st_size > 2 * _EDGE:
                f.seek(-_EDGE, 2)
                h.update(f.read(_EDGE))
    return h.hexdigest()[:16]


def _saved_pooling(source: str) -> str | None:
    """The pooling of a sentence-transformers model (its 1_Pooling/config.json), if it is one."""
    from transformers.utils import cached_file

    try:
        path = cached_file(source, "1_Pooling/config.json", _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except Exception:
        return None
    if not path:
        return None
    cfg = json.loads(Path(path).read_text())
    for mode, name in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
                       ("pooling_mode_max_tokens", "max")):
        if cfg.get(mode):
            return name
    return None
