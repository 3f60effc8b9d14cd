"""`finetune-advisor advise`: measure, estimate, decide; write RUN/advice.json and print a summary."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from ._data_args import add_data_arguments

    p = sub.add_parser(
        "advise", help="decide whether fine-tuning is worth it (zero-shot, head-only, fine-tune, change-model)",
        description="Score the model's zero-shot accuracy, probes on its frozen features, transferability and "
                    "domain shift; run a short pilot fine-tuning and time training steps; then decide, with "
                    "reasons, and write RUN/advice.json.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  finetune-advisor advise --model demo:minilm --data demo:bbc-news --out runs/bbc\n"
               "  finetune-advisor advise --model ./my-model --data train.csv --valid valid.csv --out runs/mine \\\n"
               "      --min-gain 0.02 --budget-seconds 3600 --gpu-hourly-cost 2.5")
    p.add_argument("--model", metavar="M", required=True,
                   help="Hugging Face id or local folder of a text or image model, or demo:minilm")
    add_data_arguments(p)
    p.add_argument("--out", metavar="RUN", required=True, help="run directory (created if missing)")
    g = p.add_argument_group("decision")
    g.add_argument("--min-gain", type=float, default=0.01, help="accuracy gain that makes training worth it (default 0.01)")
    g.add_argument("--target-accuracy", type=float, help="stop at the cheapest option reaching this accuracy")
    g.add_argument("--budget-seconds", type=float, help="most seconds the search may take")
    g.add_argument("--gpu-hourly-cost", type=float, help="price of a device hour, to show the cost in money")
    g = p.add_argument_group("signals")
    g.add_argument("--label-descriptions", metavar="FILE", help="JSON {label: sentence} for zero-shot: a text model's label embeddings (default \"This text "
                        "is about {label}.\"), an image-text model's prompts (default \"a photo of a {label}.\")")
    g.add_argument("--reference", metavar="FILE",
                   help="texts of the model's world, one a line (default: bundled English); for images, a folder of "
                        "images (none by default)")
    g.add_argument("--unlabeled", metavar="FILE",
                   help="production texts, one a line (images: a folder), compared with the training data")
    g.add_argument("--max-length", type=int, default=128, help="truncation length in tokens (default 128)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..advisor import AdvisorConfig, advise, read_inputs
    from ..core import ADVICE_FILE, RunDir, load_backbone, load_task

    from ._data_args import absolute, data_config, print_notes

    config = AdvisorConfig(min_gain=args.min_gain, target_accuracy=args.target_accuracy,
                           budget_seconds=args.budget_seconds, gpu_hourly_cost=args.gpu_hourly_cost,
                           label_descriptions=args.label_descriptions, reference=args.reference,
                           unlabeled=args.unlabeled, max_length=args.max_length, device=args.device, seed=args.seed)
    RunDir(args.out).check()  # an unwritable --out or a broken run.json fails now, not after the work
    dconfig = data_config(args)
    task = load_task(args.data, dconfig)
    inputs = read_inputs(task, config)  # bad optional files fail here, before the model is loaded
    backbone = load_backbone(args.model)
    print_notes(task, backbone, args.model)
    run_dir = RunDir(args.out)
    record = advise(backbone, task, config, inputs=inputs, progress=True, run_dir=run_dir.path)
    run_dir.write_run_record(command="advise", configs={"advisor": config, "model": args.model},
                             data_fingerprint=task.fingerprint, data_source=absolute(args.data), data_config=dconfig,
                             model_changes=backbone.changes)
    print(format_advice(record))
    print(f"\nwrote {run_dir.file(ADVICE_FILE)}")
    return 0


def format_advice(r) -> str:
    """The advice (a core.AdviceRecord) as the terminal shows it."""
    def pct(x):
        return "n/a" if x is None else f"{x:.3f}"

    e, c, probe = r.expected, r.cost, r.probe
    lines = [f"decision: {r.decision.upper()}"] + [f"  - {reason}" for reason in r.reasons] + [
        "",
        f"chance (majority class)   {pct(r.chance_accuracy)}",
        f"zero-shot ({r.zero_shot.method or 'n/a'}){'':<3} {pct(r.zero_shot.accuracy)}",
        f"probe (logistic, {probe.features})   {pct(probe.accuracy)}   kNN {pct(probe.knn_accuracy)}"
        f"   LogME {pct(probe.logme)}   H-score {pct(probe.h_score)}",
        f"expected fine-tuned       {pct(e.fine_tune_accuracy)}"
        + (f" ± {e.uncertainty:.3f} ({e.interval or 'interval'}), top "
           f"{e.suggested_unfrozen_layers[0]}-{e.suggested_unfrozen_layers[1]} blocks"
           if e.fine_tune_accuracy is not None and e.suggested_unfrozen_layers else ""),
    ]
    if probe.baseline_accuracy is not None:
        lines.append(f"no pretraining ({probe.baseline_method}) {pct(probe.baseline_accuracy)}")
    search = "n/a" if c.search_seconds is None else f"{c.search_seconds:.0f} s"
    lines += [
        format_shift(r.shift),
        f"cost on {c.device}: search ≈ {search}"
        + (f" (≈ {c.search_cost:.2f} at the given hourly price)" if c.search_cost is not None else "")
        + ", per epoch: " + ", ".join(f"k={k} {v:.0f}s" for k, v in c.per_epoch_seconds.items()),
        f"advisor took {r.advisor_seconds:.0f} s"
        + (" (" + ", ".join(f"{k.replace('_', '-')} {v:.0f}s" for k, v in r.step_seconds.items()) + ")"
           if r.step_seconds else ""),
    ]
    lines += [f"skipped: {x}" for x in r.skipped]
    return "\n".join(lines)


def format_shift(s) -> str:
    """The shift line (a core.Shift): token coverage for text, input statistics for images; MMD and
    PAD when measured."""
    if s.model_input is not None:  # an image task
        parts = [f"images {s.images.width[1]}x{s.images.height[1]} px (median) into "
                 f"{s.model_input[1]}x{s.model_input[0]} (size ratio {s.size_ratio:.2f})",
                 f"grayscale {s.grayscale_share:.0%}"]
        if s.normalisation_gap is not None:
            parts.append(f"normalisation gap {s.normalisation_gap:.2f} sd")
    else:
        parts = [f"unknown tokens {s.unk_rate:.2%}", f"fertility {s.fertility:.2f}"]
    if s.mmd2 is not None:
        parts += [f"MMD² {s.mmd2:.4f} (p={s.mmd_p_value:.3f})", f"PAD {s.pad:.2f}"]
    if s.effective_rank is not None:
        parts.append(f"effective rank {s.effective_rank:.0f}/{s.hidden_size}")
    return "shift: " + ", ".join(parts)
