"""Steps 3-5 of the export: fused and int8 variants, each kept only when it passes its gate, then
latencies timed side by side that rank them.

Fusion is onnxscript's onnxruntime rewriter (`optimize_for_ort`: Attention, SkipLayerNormalization,
BiasGelu, ...) followed by constant folding large enough to fold the packed QKV weight: only a
fused Attention node with constant weights lets onnxruntime's quantiser emit QAttention, which is
where int8 pays most on a transformer.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from ..core import ExportSource

from ._checks import DoesNotRun, Tolerance, deploy_accuracy, max_diff, onnx_logits, parity
from ._onnx import _quiet_logs

FUSED = "model.opt.onnx"
INT8 = "model.int8.onnx"
STATIC_INT8 = "model.int8-static.onnx"
STATIC_OPS = ("Conv", "Gemm", "MatMul")  # what static int8 quantises
# static int8 that fails the gate is made again with more of its first convolutions in float (`quantize_static`)
FLOAT_FIRST_LADDER = (0, 4, 8, 16)
CALIBRATION_ROWS = 128  # training inputs that calibrate static int8's activation ranges
FOLD_LIMIT = 1 << 22  # elements: folds the packed QKV weights (3 x hidden x hidden) of base-sized models
QUANTIZED_OPS = ("QAttention", "DynamicQuantizeMatMul", "MatMulInteger", "QGemm", "QLinearMatMul", "ConvInteger")


def fuse(source: ExportSource, folder: Path, split, gold, torch_logits, tol: Tolerance, variants: list) -> dict:
    """model.onnx -> model.opt.onnx with onnxruntime's fused operators; kept when it passes parity.

    Returns the record of the step: the count of each fusion applied, kept or why not.
    """
    try:
        fused = fuse_graph(folder / "model.onnx", folder / FUSED)
    except Exception as e:
        return {"tried": True, "kept": False, "why": f"the fusion failed: {type(e).__name__}: {e}"[:300]}
    if not fused:
        (folder / FUSED).unlink()
        return {"tried": True, "kept": False, "fused_operators": {}, "why": "no fusion pattern matched this graph"}
    variant = {"file": FUSED, "precision": "fp32-fused", "fused_operators": fused}
    failures = parity(source, folder / FUSED, split, torch_logits, tol, variant)
    why = "it failed parity: " + "; ".join(failures) if failures else ""
    if not why:
        variant["accuracy"] = deploy_accuracy(folder, FUSED, split, gold)
    variant.update(passed=not why, why=why)
    variants.append(variant)
    return {"tried": True, "kept": not why, "fused_operators": fused, "why": why}


def fuse_graph(source: Path, target: Path) -> dict:
    """Write `source` with onnxruntime's fused operators and folded weights to `target`; return
    {fusion: count} of the fusions applied."""
    from onnxscript import ir, optimizer
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    with warnings.catch_warnings(), _quiet_logs("onnxscript"):
        warnings.simplefilter("ignore")
        model, counts = optimize_for_ort(ir.load(source))
        model = optimizer.optimize(model, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
        for node in model.graph:  # the quantiser's QAttention does not take equal qkv_hidden_sizes
            sizes = node.attributes.get("qkv_hidden_sizes") if node.op_type == "Attention" else None
            if sizes is not None and len(set(sizes.value)) == 1:
                del node.attributes["qkv_hidden_sizes"]
        ir.save(model, target)
    return {k: int(v) for k, v in counts.items() if v}


def quantize(folder: Path, base: str, split, gold, torch_logits, torch_acc, config, source, variants) -> dict:
    """Dynamic int8 (`dynamic_int8`) of `base`; kept when the accuracy drop is within the gate."""

    def make(target: Path) -> None:
        dynamic_int8(folder / base, target)

    return _gated(make, folder / INT8, "int8", base, split, gold, torch_logits, torch_acc, config, source, variants)


def dynamic_int8(source: Path, target: Path) -> None:
    """onnxruntime.quantization.quantize_dynamic with int8 weights, one scale per output channel:
    activations are quantised per batch, weights once. Per-channel scales, not one per tensor: on a
    MiniLM classifier (fused graph, QAttention + MatMulInteger) per-tensor weights changed 22 of
    1,352 unseen BBC predictions (3 of 79 validation rows, a 0.038 drop), per-channel 4 (none of
    the 79), at the same speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)


def quantize_static(folder: Path, base: str, calibration, split, gold, torch_logits, torch_acc, config, source,
                    variants) -> dict:
    """Static int8 (QDQ, onnxruntime.quantization.quantize_static) of a convolutional graph:
    per-channel int8 weights and uint8 activations whose ranges are calibrated (min-max) on
    `calibration`, a list of input batches from the training split. Only Conv, Gemm and MatMul
    are quantised: on EfficientNet-Lite0 quantising every operator (adds, multiplies, pooling)
    flattened the logits to one class. Kept when the accuracy drop is within the gate.

    When it is not, it is made again with the first 4, 8, then 16 quantisable convolutions left
    in float too (`FLOAT_FIRST_LADDER`), until one passes the gate: accuracy-aware fallback to
    float, from the layers the input's statistics reach first. On a Lite0 head on scikit-learn's
    8x8 digits (179 validation images; fp32 0.939) agreement with fp32 went 0.860 (none extra in
    float), 0.983 (4), 0.989 (8), 0.994 (16, passes: 0.933), while leaving the last 8 in float
    instead gave 0.872 and percentile calibration 0.883: the early layers are the ones that see
    pixels unlike ImageNet's. The refused rungs are listed in the kept variant's `tries`.

    Static QDQ is the usual int8 for convolutions (dynamic ConvInteger quantises activations per
    batch, per tensor). On transformers it was measured slower than dynamic int8 with a larger
    drop (benchmarks/export_latency.py), so the export tries it only where the graph has Conv nodes.
    """
    tries = []
    for float_first in FLOAT_FIRST_LADDER:
        def make(target: Path, float_first=float_first) -> None:
            static_int8(folder / base, target, calibration, float_first=float_first)

        result = _gated(make, folder / STATIC_INT8, "int8-static", base, split, gold, torch_logits, torch_acc,
                        config, source, variants)
        variants[-1]["float_first_convs"] = float_first
        if result["kept"] or float_first == FLOAT_FIRST_LADDER[-1] or "accuracy_drop" not in result:
            variants[-1]["tries"] = tries
            return {**result, "float_first_convs": float_first, "tries": tries}
        refused = variants.pop()
        tries.append({"float_first_convs": float_first, "accuracy": refused["accuracy"],
                      "accuracy_drop": refused["accuracy_drop"]})


def static_int8(source: Path, target: Path, calibration: list, *, float_first: int = 0) -> None:
    """`quantize_static`'s file step: onnxruntime's pre-processing first (shape inference, and
    graph optimisation that folds each BatchNormalization into its Conv, so the int8 weights are
    the folded ones and no float BatchNorm runs between int8 convolutions), then QDQ with
    per-channel int8 weights of Conv, Gemm and MatMul and uint8 activations calibrated (min-max)
    on the feeds in `calibration`. Left in float (`_kept_float`): depthwise (grouped)
    convolutions, where one activation scale for all channels is how post-training int8 loses
    MobileNet-style networks their accuracy, and, as usual for post-training int8, the first
    convolution (it reads the pixels), the last one and the head. On a Lite0 head on Fashion-MNIST
    (200 validation images) agreement with fp32 went from 0.835 (everything quantised) to 0.915
    (depthwise float) to 0.99 (depthwise and the ends float). `float_first`: the first that many
    of the convolutions it would quantise stay in float too (`quantize_static`'s ladder)."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="finetune-advisor-quant-") as tmp:
        prepared = Path(tmp) / "model.pre.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        ort_quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(STATIC_OPS), per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=_kept_float(prepared, float_first))


def _kept_float(path: Path, float_first: int = 0) -> list[str]:
    """Names of the nodes static int8 leaves in float: Conv nodes with more than one group
    (depthwise and grouped convolutions), the first and the last Conv, the last Gemm or MatMul
    (the head), and the first `float_first` of the convolutions left after those."""
    import onnx

    nodes = onnx.load(str(path)).graph.node
    convs = [n for n in nodes if n.op_type == "Conv"]
    grouped = [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    head = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
    ends = [convs[0].name, convs[-1].name] if convs else []
    kept = set(grouped + ends + head)
    first = [n.name for n in convs if n.name not in kept][:float_first]
    return list(dict.fromkeys(grouped + ends + head + first))


def has_convolutions(path: Path) -> bool:
    import onnx

    return any(n.op_type == "Conv" for n in onnx.load(str(path), load_external_data=False).graph.node)


def calibration_batches(source: ExportSource, split, rows: int = CALIBRATION_ROWS, batch_size: int = 16,
                        seed: int = 0) -> list:
    """Input batches of up to `rows` rows of `split`, drawn at random (seeded), for static quantisation."""
    idx = np.sort(np.random.default_rng(seed).permutation(len(split))[:rows])
    texts = [split.texts[i] for i in idx]
    pairs = [split.pairs[i] for i in idx] if split.pairs else None
    return [source.inputs(texts[s:s + batch_size], pairs[s:s + batch_size] if pairs else None)
            for s in range(0, len(texts), batch_size)]


def quantized_nodes(graph) -> dict:
    """{op: count} of the int8 operators in a graph: onnxruntime's integer operators, and "QDQ <op>"
    for a Conv, Gemm or MatMul that reads a dequantised input (static QDQ format; onnxruntime runs
    the pattern DequantizeLinear -> op -> QuantizeLinear as one integer kernel)."""
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    ops = Counter(n.op_type for n in graph.node if n.op_type in QUANTIZED_OPS)
    ops.update(f"QDQ {n.op_type}" for n in graph.node
               if n.op_type in STATIC_OPS and n.input and n.input[0] in dequantized)
    return dict(ops)


def _gated(make, target: Path, precision: str, base: str, split, gold, torch_logits, torch_acc, config, source,
           variants) -> dict:
    """Make the quantised file, then record its quantised nodes, parity and accuracy; kept (passed)
    when its accuracy is within config.max_accuracy_drop of torch's and its logits are finite."""
    import onnx

    try:
        with _quiet_logs(""):  # the quantiser advises pre-processing on the root logger
            make(target)
    except Exception as e:
        variants.append({"file": target.name, "precision": precision, "passed": False,
                         "why": f"quantisation failed: {type(e).__name__}: {e}"[:300]})
        return {"tried": True, "kept": False, "why": variants[-1]["why"]}
    quantized = quantized_nodes(onnx.load(str(target), load_external_data=False).graph)
    try:
        _, logits = onnx_logits(source, target, split)
    except DoesNotRun as e:
        variants.append({"file": target.name, "precision": precision, "from": base, "quantized_nodes": quantized,
                         "passed": False, "why": str(e)})
        return {"tried": True, "kept": False, "from": base, "quantized_nodes": quantized, "why": str(e)}
    accuracy = deploy_accuracy(target.parent, target.name, split, gold)
    drop = torch_acc - accuracy
    why = "" if drop <= config.max_accuracy_drop else (
        f"accuracy {accuracy:.4f} is {drop:.4f} below torch's {torch_acc:.4f} (gate {config.max_accuracy_drop})")
    if not np.isfinite(logits).all():
        why = "it gives NaN or infinite logits"
    variants.append({"file": target.name, "precision": precision, "from": base, "quantized_nodes": quantized,
                     "max_abs_diff": max_diff(logits, torch_logits), "accuracy": accuracy,
                     "accuracy_drop": drop, "passed": not why, "why": why})
    return {"tried": True, "kept": not why, "from": base, "quantized_nodes": quantized, "accuracy_drop": drop,
            "why": why}


class Timer:
    """Latency at batch 1 and 32 at sequence length `length`, the contenders timed in turn within
    each round (torch, fp32, int8, torch, ...), so a load that comes and goes hits them alike.

    In a round each contender runs once untimed (its threads take the cores back from the one
    before), then `block` timed runs: 5 at batch 1, 1 at batch 32. Figures are medians over the
    rounds' runs, with quartiles as the spread. ONNX sessions timed here must not spin their
    threads after a run (`ort_session(..., spinning=False)`): spinning threads would slow the
    contender after them, 2-3x at batch 1 on 2 cores.
    """

    def __init__(self, source: ExportSource, split, length: int, repeats: int, batches=(1, 32)):
        self.repeats = repeats
        self.feeds = {}
        for b in dict.fromkeys((1, 32, *batches)):
            texts = [split.texts[i % len(split)] for i in range(b)]
            self.feeds[b] = source.inputs(texts, length=length)

    def measure(self, runners: dict) -> dict:
        """{name: {"latency_ms": {batch_b: median}, "latency_spread_ms": {batch_b: [q1, q3]}}}"""
        out = {name: {"latency_ms": {}, "latency_spread_ms": {}} for name in runners}
        rounds = max(3, -(-self.repeats // 5))
        for batch, block in ((b, 5 if b == 1 else 1) for b in self.feeds):
            for name, (q1, median, q3) in time_in_turn(runners, [self.feeds[batch]], rounds, block).items():
                out[name]["latency_ms"][f"batch_{batch}"] = median
                out[name]["latency_spread_ms"][f"batch_{batch}"] = [q1, q3]
        return out


def time_in_turn(runners: dict, feeds: list, rounds: int, block: int = 1) -> dict:
    """{name: (q1, median, q3) ms} of one pass of each runner over `feeds`, runners in turn per round."""
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            run(feeds[0])  # untimed: this runner's threads take the cores back
            for _ in range(block):
                t0 = time.perf_counter()
                for f in feeds:
                    run(f)
                times[name].append((time.perf_counter() - t0) * 1000)
    return {name: tuple(float(x) for x in np.percentile(t, [25, 50, 75])) for name, t in times.items()}


def recommend(variants: list[dict]) -> tuple[str, str]:
    """The variant to deploy and, when the timings cannot rank them, a sentence saying so.

    The fastest passed variant at batch 32, except that a lossy (int8) variant must be clearly
    faster than the best exact (fp32) one: its upper quartile below their lower quartile. When it
    is not, the exact variant is recommended and the note says the two are within noise. So the
    recommendation is never a variant measured slower than fp32 ONNX.
    """
    passed = [v for v in variants if v["passed"] and "latency_ms" in v]
    exact = [v for v in passed if v["precision"].startswith("fp32")]
    speed = lambda v: v["latency_ms"]["batch_32"]  # noqa: E731
    best_exact, fastest = min(exact, key=speed), min(passed, key=speed)
    if fastest is best_exact:
        return best_exact["file"], ""
    lossy_q3 = fastest["latency_spread_ms"]["batch_32"][1]
    exact_q1 = best_exact["latency_spread_ms"]["batch_32"][0]
    if lossy_q3 < exact_q1:
        return fastest["file"], ""
    return best_exact["file"], (
        f"{fastest['file']} ({speed(fastest):.0f} ms, quartiles {_quartiles(fastest)}) and {best_exact['file']} "
        f"({speed(best_exact):.0f} ms, {_quartiles(best_exact)}) are within noise at batch 32 on this machine, "
        f"so the exact {best_exact['file']} is recommended; time them on the deploy machine to choose")


def _quartiles(v: dict) -> str:
    q1, q3 = v["latency_spread_ms"]["batch_32"]
    return f"{q1:.0f}-{q3:.0f}"
