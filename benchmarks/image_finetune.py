"""Benchmark: does this project's fine-tuning of an image network work? Against the frozen probe
and a plain PyTorch loop written here, on the same splits, in one run.

The model is demo:efficientnet-lite0 (ImageNet, 16 blocks, BatchNorm). The tasks are the image
suite's ten (benchmarks/advisor_suite_images.py) and all 1,797 of scikit-learn's handwritten digits
(`digits-all`, 80/10/10 as `load_task` splits them). For each, on its training and validation
images:
- probe: the closed-form head on the frozen model's pooled features (core.fit_head);
- project: this project's all-blocks fine-tune (core.train, k = 16) by the image suite's protocol
  (LP-FT from the probe's head, 1e-4, BatchNorm frozen, epochs raised on small data until a run has
  seen MIN_EXAMPLES images); taken from the suite's measurements
  (results/advisor_suite_images_measured.json, seed 0) where its data and protocol are this task's,
  else trained here;
- plain: an independent loop in this file: the same pretrained network and pixels, a linear head
  started from the probe's, AdamW at one constant rate for the network (1e-4) and 10x for the head,
  weight decay 0.01, BatchNorm layers in inference mode, batches of 32 in a seeded order, as many
  epochs as `project`, the best epoch's validation accuracy (as `project` keeps its best epoch).

The summary's targets: `worst_all_blocks_minus_probe` >= -0.02 (fine-tuning every block never loses
more than 2 points to the frozen head), `median_project_minus_plain` >= 0 (ours at least as good as
the plain loop), `digits_all_blocks` >= 0.97. Rows are written after each task; a run cut short
goes on where it stopped (a row is kept while its data and protocol hold).

    python benchmarks/image_finetune.py [--tasks NAME ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from advisor_suite_images import MEASURED, PROTOCOL, build_tasks, content_key  # noqa: E402
from deploy_front import digits_folder  # noqa: E402

from finetune_advisor.core import (DataConfig, FeatureCache, TrainConfig, epochs_for, fit_head,  # noqa: E402
                                   library_versions, load_backbone, load_task, train, write_json_atomic)

RESULTS = Path(__file__).resolve().parent / "results" / "image_finetune.json"
PLAIN = {"lr": 1e-4, "head_lr": 1e-3, "weight_decay": 0.01, "batch_size": 32, "batchnorm": "inference mode"}
TARGETS = {"worst_all_blocks_minus_probe": ">= -0.02", "median_project_minus_plain": ">= 0",
           "digits_all_blocks": ">= 0.97"}


def probe(backbone, task, cache) -> tuple[float, tuple]:
    """(validation accuracy, (weight, bias)) of the closed-form head on frozen pooled features."""
    x = {s: cache.features(backbone, getattr(task, s), start=backbone.num_blocks, max_length=128,
                           progress=False).numpy() for s in ("train", "valid")}
    weight, bias, _ = fit_head(x["train"], task.train.labels, task.num_labels)
    return float(np.mean((x["valid"] @ weight.T + bias).argmax(1) == task.valid.labels)), (weight, bias)


def project(backbone, task, head, cache, epochs: int) -> float:
    """This project's all-blocks fine-tune, by the image suite's protocol, seed 0."""
    config = TrainConfig(unfrozen_layers=backbone.num_blocks, epochs=epochs, patience=0, seed=0,
                         learning_rate=PROTOCOL["lr_all"], head_lr_multiplier=PROTOCOL["head_lr_multiplier"],
                         batchnorm=PROTOCOL["batchnorm"])
    return train(backbone, task, config, cache=cache, head_init=head, progress=False).best_valid_accuracy


def plain_loop(backbone, task, head, epochs: int, seed: int = 0) -> float:
    """A fine-tune written without core's trainer: best validation accuracy over `epochs` epochs."""
    import torch

    torch.manual_seed(seed)
    network = copy.deepcopy(backbone.model)

    def training():  # BatchNorm in inference mode: running statistics stay the pretrained ones
        network.train()
        for module in network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()

    training()
    linear = torch.nn.Linear(backbone.hidden_size, task.num_labels)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(head[0], dtype=torch.float32))
        linear.bias.copy_(torch.as_tensor(head[1], dtype=torch.float32))
    optimizer = torch.optim.AdamW([{"params": network.parameters(), "lr": PLAIN["lr"]},
                                   {"params": linear.parameters(), "lr": PLAIN["head_lr"]}],
                                  weight_decay=PLAIN["weight_decay"])
    pixels = {s: backbone.tokenize(getattr(task, s).texts) for s in ("train", "valid")}
    labels = {s: torch.as_tensor(getattr(task, s).labels) for s in ("train", "valid")}

    def logits(split, idx):
        return linear(network(**pixels[split].batch(idx)).pooler_output.flatten(1))

    best, rng, size = 0.0, np.random.default_rng(seed), PLAIN["batch_size"]
    for _ in range(epochs):
        order = rng.permutation(len(task.train))
        for s in range(0, len(order), size):
            idx = order[s:s + size]
            loss = torch.nn.functional.cross_entropy(logits("train", idx), labels["train"][idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        network.eval()
        with torch.no_grad():
            rows = np.arange(len(task.valid))
            predicted = torch.cat([logits("valid", rows[s:s + 64]).argmax(1) for s in range(0, len(rows), 64)])
        best = max(best, float((predicted == labels["valid"]).float().mean()))
        training()
    return best


def suite_measurement(name: str, key: str, blocks: int) -> float | None:
    """The image suite's seed-0 all-blocks accuracy of this task, when measured on the same data by
    this protocol."""
    entry = (json.loads(MEASURED.read_text()) if MEASURED.is_file() else {}).get(name, {})
    if entry.get("fingerprint") != key or entry.get("protocol") != PROTOCOL:
        return None
    return entry["measured"][str(blocks)]["seeds"][0]


def summary(rows: list[dict]) -> dict:
    done = [r for r in rows if r["project"] is not None]
    digits = next((r for r in done if r["task"] == "digits-all"), None)
    return {"tasks": len(done),
            "worst_all_blocks_minus_probe": min((r["project"] - r["probe"] for r in done), default=None),
            "median_project_minus_plain": float(np.median([r["project"] - r["plain"] for r in done])) if done else None,
            "digits_all_blocks": digits and digits["project"],
            "tasks_where_fine_tuning_pays_5_points": sum(r["project"] - r["probe"] >= 0.05 for r in done)}


def measure_task(backbone, name: str, task, key: str, old: dict | None, wait: bool) -> dict:
    """The task's row: the probe and plain loop (kept from `old` when it has them), and the project's
    fine-tune from the suite's measurements, else trained here (`wait`: left None for a later run,
    while the suite has not measured it yet; digits-all, in no suite, is always trained here)."""
    t0, cache = time.perf_counter(), FeatureCache()
    epochs = epochs_for(PROTOCOL["epochs"], len(task.train), min_examples=PROTOCOL["min_examples"])
    row = old or {"task": name, "fingerprint": key, "protocol": PROTOCOL, "train_rows": len(task.train),
                  "valid_rows": len(task.valid), "epochs": epochs, "seconds": 0.0}
    head = None
    if "plain" not in row:
        row["probe"], head = probe(backbone, task, cache)
        row["plain"] = plain_loop(backbone, task, head, epochs)
    row["project"] = suite_measurement(name, key, backbone.num_blocks)
    row["project_from"] = "advisor_suite_images"
    if row["project"] is None and (name == "digits-all" or not wait):
        head = head or probe(backbone, task, cache)[1]
        row["project"], row["project_from"] = project(backbone, task, head, cache, epochs), "trained here"
    row["seconds"] += time.perf_counter() - t0
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", help="run only these tasks (default: all)")
    parser.add_argument("--wait-for-suite", action="store_true",
                        help="do not train the project's fine-tune of a suite task the image suite has not measured "
                             "yet (run beside it; a later run fills those in)")
    args = parser.parse_args(argv)
    backbone = load_backbone("demo:efficientnet-lite0")
    old = {r["task"]: r for r in json.loads(RESULTS.read_text())["tasks"]} if RESULTS.is_file() else {}
    rows = []

    def write():
        record = {"benchmark": "image_finetune", "model": "demo:efficientnet-lite0", "plain_loop": PLAIN,
                  "targets": TARGETS, "summary": summary(rows), "tasks": rows, "versions": library_versions()}
        write_json_atomic(RESULTS, record)
        return record

    with tempfile.TemporaryDirectory() as tmp:
        tasks = {"digits-all": (str(digits_folder(Path(tmp) / "digits-all")), DataConfig(seed=0))}
        tasks.update(reversed(build_tasks(Path(tmp)).items()))  # the suite measures from the other end
        for name, (path, dconfig) in tasks.items():
            task = load_task(path, dconfig)
            key = content_key(task, Path(tmp))
            mine = old.get(name) if old.get(name, {}).get("fingerprint") == key and \
                old[name].get("protocol") == PROTOCOL else None
            if (args.tasks and name not in args.tasks) or (mine and mine["project"] is not None):
                if mine:
                    rows.append(mine)  # measured on this data by this protocol already
                continue
            row = measure_task(backbone, name, task, key, mine, args.wait_for_suite)
            rows.append(row)
            project_text = "waits for the suite" if row["project"] is None else f"{row['project']:.3f}"
            print(f"{name:<16} probe {row['probe']:.3f}  project {project_text}  plain {row['plain']:.3f}  "
                  f"({row['epochs']} epochs, {row['train_rows']} rows, {row['seconds']:.0f} s)", flush=True)
            write()
    print(json.dumps(write()["summary"], indent=2))


if __name__ == "__main__":
    main()
