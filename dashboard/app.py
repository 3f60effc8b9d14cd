"""The finetune-advisor dashboard (Streamlit): the advice, the study and the export of run directories.

    finetune-advisor dashboard runs/bbc [runs/other …] [--port 8501]

It reads only the JSON records, the Optuna storage (read-only) and the exported ONNX model; it
never imports torch.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st


from finetune_advisor.core import InputError, first_line, steps_per_epoch  # noqa: E402
from finetune_advisor.dashboard._runs import (RunView, compare_rows, epoch_axis, fixed_params, front_rows,  # noqa: E402
                                             layer_points, load_run, run_paths, table, trial_rows, validation_errors)

REFRESH_SECONDS = 5


def main() -> None:
    st.set_page_config(page_title="finetune-advisor", layout="wide")
    # `streamlit run app.py -- RUN …` puts the runs in sys.argv; elsewhere (tests) they come from the environment
    paths = run_paths(sys.argv[1:] if Path(sys.argv[0]).name == Path(__file__).name else [])
    with st.sidebar:
        st.markdown("### Run directories")
        extra = st.text_input("Add a run directory", placeholder="runs/bbc")
        if extra:
            paths.append(Path(extra))
        if not paths:
            st.title("finetune-advisor")
            st.info("No run directory to show. Start one with "
                    "`finetune-advisor advise --model demo:minilm --data demo:bbc-news --out runs/demo`, "
                    "then open it with `finetune-advisor dashboard runs/demo`.")
            return
        names = [str(p) for p in paths]
        chosen = st.selectbox("Run", names)
    run = load_run(chosen)
    st.title(f"finetune-advisor · {run.name}")
    for problem in run.problems:
        st.warning(problem)
    advice_tab, search_tab, export_tab, mistakes_tab, compare_tab = st.tabs(
        ["Advice", "Search", "Export", "Mistakes", "Compare runs"])
    with advice_tab:
        guarded(run, "advice", show_advice)
    with search_tab:
        guarded(run, "search", show_search)
    with export_tab:
        guarded(run, "export", show_export)
    with mistakes_tab:
        try:
            show_mistakes(run)
        except Exception as e:
            st.error(f"The mistakes cannot be shown: {describe(e)}.")
    with compare_tab:
        try:
            show_compare([load_run(p) for p in paths])
        except Exception as e:  # one broken run must not blank the comparison's explanation
            st.error(f"The comparison cannot be drawn: {describe(e)}.")


def guarded(run: RunView, stage: str, show) -> None:
    """Draw one tab; a broken record is said in this tab, with the file and the command that remakes
    it, and the other tabs still draw."""
    if stage in run.broken:
        st.error(run.broken[stage])
        return
    try:
        show(run)
    except Exception as e:
        st.error(f"{run.file(stage)} cannot be shown: {describe(e)}. It was written by another version or edited; "
                 f"make it again with: {run.command(stage)}")


def describe(error: Exception) -> str:
    """What is wrong, in words: a missing key is named as such."""
    if isinstance(error, KeyError):
        return f"it lacks the entry {error.args[0]!r}"
    return f"{type(error).__name__}: {first_line(error)}"[:300]


# --------------------------------------------------------------------------- advice


def show_advice(run: RunView) -> None:
    a = run.advice
    if a is None:
        st.info(run.missing("advice"))
        return
    st.header(f"Decision: {a.decision.upper()}")
    for reason in a.reasons:
        st.markdown(f"- {reason}")
    left, right = st.columns([3, 2])
    expected, cost = a.expected, a.cost
    with left:
        # error bars: a measured accuracy's standard error on the validation rows, the forecast's interval
        bars = [("chance", a.chance_accuracy, None),
                (f"zero-shot ({a.zero_shot.method or ''})", a.zero_shot.accuracy, a.zero_shot.accuracy_se),
                ("probe (frozen)", a.probe.accuracy, a.probe.accuracy_se),
                ("kNN (frozen)", a.probe.knn_accuracy, a.probe.knn_accuracy_se),
                ("expected fine-tuned", expected.fine_tune_accuracy, expected.uncertainty),
                (f"no pretraining ({a.probe.baseline_method})", a.probe.baseline_accuracy,
                 a.probe.baseline_accuracy_se)]
        bars = [b for b in bars if b[1] is not None]
        fig = go.Figure(go.Bar(x=[b[0] for b in bars], y=[b[1] for b in bars],
                               error_y={"type": "data", "array": [b[2] or 0 for b in bars]},
                               text=[f"{b[1]:.3f}" for b in bars], textposition="outside"))
        fig.update_layout(yaxis={"range": [0, 1.08], "title": "validation accuracy"}, height=360,
                          margin={"t": 20, "b": 20})
        st.plotly_chart(fig, key=f"advice-{run.path}")
    with right:
        st.subheader(f"Cost on {cost.device}")
        c1, c2 = st.columns(2)
        c1.metric("search (estimated)", f"{cost.search_seconds or 0:.0f} s")
        c2.metric("advisor took", f"{a.advisor_seconds:.0f} s")
        if cost.search_cost is not None:
            st.metric("search cost at the given hourly price", f"{cost.search_cost:.2f}")
        if cost.per_epoch_seconds:
            st.dataframe(pd.DataFrame({"blocks trained (k)": list(cost.per_epoch_seconds),
                                       "seconds per epoch": list(cost.per_epoch_seconds.values())}), hide_index=True)
        if a.decision == "fine-tune" and a.suggested_layers:
            lo, hi = a.suggested_layers
            st.markdown(f"Suggested: fine-tune the top **{lo}–{hi}** blocks.")
    st.subheader("Domain shift")
    st.dataframe(pd.DataFrame(shift_rows(a)), hide_index=True)
    for skipped in a.skipped:
        st.caption(f"skipped: {skipped}")


def shift_rows(a) -> list[dict]:
    """The shift measures of an AdviceRecord beside the thresholds that drove (or could drive) the decision."""
    s, limits = a.shift, a.thresholds

    def limit(name: str, form: str) -> str:  # advice.json carries the rule's thresholds; older ones may not
        value = getattr(limits, name) if limits else None
        return format(value, form) if value is not None else "?"

    p_value = s.mmd_p_value
    if s.model_input is not None:  # an image task: the input statistics that decide transfer
        h, w = s.model_input
        measures = [
            {"measure": "size ratio (median side / model's)", "value": s.size_ratio,
             "threshold": f"model input {h}x{w}"},
            {"measure": "grayscale share", "value": s.grayscale_share, "threshold": "informative"},
            {"measure": "normalisation gap (sd)", "value": s.normalisation_gap,
             "threshold": "vs the processor's mean/std"},
            {"measure": "contrast ratio", "value": s.contrast_ratio, "threshold": "informative"},
            {"measure": "MMD² vs reference images", "value": s.mmd2,
             "threshold": "no reference (--reference DIR)" if p_value is None else f"p-value {p_value:.3f}"}]
    else:
        measures = [
            {"measure": "unknown-token rate", "value": s.unk_rate,
             "threshold": f"> {limit('max_unk_rate', '.0%')} → change-model"},
            {"measure": "fertility (sub-tokens per word)", "value": s.fertility, "threshold": "informative"},
            {"measure": "MMD² vs reference English", "value": s.mmd2,
             "threshold": "not measured" if p_value is None else f"p-value {p_value:.3f}"}]
    signals = [x for x in (a.zero_shot.accuracy, a.probe.accuracy, a.expected.fine_tune_accuracy) if x is not None]
    rows = [
        *measures,
        {"measure": "proxy A-distance", "value": s.pad, "threshold": "0 = same, 2 = separable"},
        {"measure": "effective rank", "value": s.effective_rank,
         "threshold": f"of {s.hidden_size or '?'} dimensions"},
        {"measure": "best signal vs chance", "value": max(signals or [0.0]),
         "threshold": f"< {limit('near_chance_floor', '.3f')} → change-model"},
        {"measure": "expected gain over probe", "value": a.expected.gain_over_probe,
         "threshold": f"< {limit('min_gain', '.3f')} → head-only"},
    ]
    return [{**r, "value": None if r["value"] is None else round(float(r["value"]), 4)} for r in rows]


# --------------------------------------------------------------------------- search


def show_search(run: RunView) -> None:
    try:
        study = run.study()
    except Exception as e:  # a truncated or foreign study.db
        st.error(f"The study's storage {run.storage_url()} cannot be read: {describe(e)}. Showing search.json "
                 "instead; a search run again into this folder rewrites it (or remove study.db first).")
        study = None
        if run.search is None:
            return
    if study is None:
        if run.search is None:
            st.info(run.missing("search"))
        else:
            st.info(f"The study's storage ({run.search.storage}) cannot be read from here; showing search.json.")
            st.dataframe(table([t.to_json() for t in run.search.trials]), hide_index=True)
        return
    running = any(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))
    if running:
        st.caption(f"A search is running: this section refreshes every {REFRESH_SECONDS} s.")
        st.fragment(run_every=REFRESH_SECONDS)(search_section)(run)
    else:
        search_section(run)


def search_section(run: RunView) -> None:
    import optuna.visualization as vis
    from optuna.trial import TrialState

    study = run.study()
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    cols = st.columns(5)
    cols[0].metric("best accuracy", f"{max(t.value for t in complete):.4f}" if complete else "–")
    for col, state in zip(cols[1:], ("complete", "pruned", "fail", "running")):
        col.metric(state, counts[state])
    if not complete:
        st.info("No trial has completed yet.")
    else:
        key = str(run.path)
        left, right = st.columns(2)
        left.plotly_chart(vis.plot_optimization_history(study), key=f"history-{key}")
        right.plotly_chart(layers_chart(trials, fixed_params(study).get("unfrozen_layers")), key=f"layers-{key}")
        curves = epoch_axis(vis.plot_intermediate_values(study), steps_per_epoch(study))
        left.plotly_chart(curves, key=f"intermediate-{key}")
        if len(complete) >= 2 and len({k for t in complete for k in t.params}) >= 2:
            try:
                with warnings.catch_warnings():  # few trials: optuna warns that importances are equal
                    warnings.simplefilter("ignore")
                    importances = vis.plot_param_importances(study)
                right.plotly_chart(importances, key=f"importance-{key}")
            except (RuntimeError, ValueError) as e:  # e.g. every trial has the same parameters
                right.caption(f"parameter importances: not computable yet ({e})")
            st.plotly_chart(vis.plot_parallel_coordinate(study), key=f"parallel-{key}")
        front = front_chart(complete, run.search)
        if front is not None:
            st.plotly_chart(front, key=f"front-{key}")
    st.subheader("Trials")
    st.dataframe(table(trial_rows(study)), hide_index=True)


def layers_chart(trials, fixed_k=None) -> go.Figure:
    """Accuracy against the number of blocks unfrozen: complete trials, pruned ones apart."""
    fig = go.Figure()
    by_state = layer_points(trials, fixed_k)
    for state, symbol in (("COMPLETE", "circle"), ("PRUNED", "x")):
        points = by_state.get(state, [])
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="markers",
                                 name=state.lower(), marker={"symbol": symbol, "size": 10},
                                 text=[f"trial {p[2]}" for p in points]))
    fig.update_layout(title="Accuracy against layers unfrozen", xaxis={"title": "blocks trained (k)", "dtick": 1},
                      yaxis={"title": "validation accuracy"})
    return fig


def front_chart(complete, record) -> go.Figure | None:
    """Validation accuracy against deployed latency (each finished trial's shape, each variant), the
    front joined by a line, the chosen trial starred and the budget as a vertical line; None when no
    trial was timed. An int8 point carries its trial's fp32 accuracy (export measures int8's own)."""
    batch = (record.latency_batch if record is not None else None) or 1
    budget = record.latency_budget_ms if record is not None else None
    rows, points = front_rows(complete, batch)
    if not points:
        return None
    fig = go.Figure()
    for variant in sorted({p["variant"] for p in points}):
        mine = [p for p in points if p["variant"] == variant]
        fig.add_trace(go.Scatter(x=[p["latency_ms"] for p in mine], y=[p["accuracy"] for p in mine], mode="markers",
                                 name=f"trials ({variant})", opacity=0.5, marker={"size": 8},
                                 text=[f"trial {p['number']}: {p['kept_layers'] or 'all'} blocks"
                                       + (f", {p['max_length']} tokens" if p["max_length"] else "") for p in mine]))
    fig.add_trace(go.Scatter(x=[p["latency_ms"] for p in rows], y=[p["accuracy"] for p in rows], mode="lines+markers",
                             name="front", line={"shape": "hv"}, marker={"size": 10},
                             text=[f"trial {p['number']} ({p['variant']})" for p in rows]))
    best = max(complete, key=lambda t: (t.value, -t.number))
    chosen = [p for p in points if p["number"] == best.number]
    if chosen:
        fastest = min(chosen, key=lambda p: p["latency_ms"])
        fig.add_trace(go.Scatter(x=[fastest["latency_ms"]], y=[fastest["accuracy"]], mode="markers", name="chosen",
                                 marker={"symbol": "star", "size": 18}))
    if budget is not None:
        fig.add_vline(x=budget, line_dash="dash", annotation_text=f"budget {budget:g} ms")
    fig.update_layout(title=f"Accuracy against latency (onnxruntime on the search's machine, batch {batch})",
                      xaxis={"title": f"ms per batch of {batch}"}, yaxis={"title": "validation accuracy"})
    return fig


# --------------------------------------------------------------------------- export


def show_export(run: RunView) -> None:
    e = run.export
    if e is None:
        st.info(run.missing("export"))
        return
    folder = run.path / "export"
    rows = [{"variant": "torch eager", "size MB": None, "accuracy": e.torch_accuracy,
             "batch 1 ms": e.torch_latency_ms.batch_1, "batch 32 ms": e.torch_latency_ms.batch_32,
             "max |diff|": None, "status": "reference"}]
    for v in e.variants:
        file = folder / v.file
        lat = v.latency_ms
        rows.append({"variant": v.file, "size MB": round(file.stat().st_size / 2**20, 1) if file.exists() else None,
                     "accuracy": v.accuracy, "batch 1 ms": lat.batch_1 if lat else None,
                     "batch 32 ms": lat.batch_32 if lat else None, "max |diff|": v.max_abs_diff,
                     "status": "recommended" if v.file == e.recommended else
                     ("passed" if v.passed else f"refused: {v.why}")})
    st.header(f"Recommended: {e.recommended}")
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    speedups = e.speedup_over_torch
    fig = go.Figure(go.Bar(x=list(speedups), y=list(speedups.values()), text=[f"{x:.2f}x" for x in speedups.values()],
                           textposition="outside"))
    shape = f"{e.sequence_length} tokens" if e.sequence_length else "one image size"
    fig.update_layout(title=f"Speed-up over PyTorch at batch 32, {shape}",
                      yaxis={"title": "x torch eager"}, height=320)
    st.plotly_chart(fig, key=f"speedup-{run.path}")
    st.subheader("Try it")
    text = st.text_area("Text to classify", key=f"try-{run.path}")
    if text.strip():
        from finetune_advisor.export import Predictor, PredictorError

        try:
            predictor = Predictor(folder)
        except PredictorError as err:
            st.error(str(err))
            return
        probs, labels = predictor.predict_proba([text])[0], predictor.labels
        best = int(probs.argmax())
        st.success(f"{labels[best]} ({probs[best]:.3f})")
        st.bar_chart(pd.DataFrame({"probability": probs}, index=labels))


# --------------------------------------------------------------------------- mistakes


@st.cache_data(show_spinner="classifying the validation split with the exported model")
def _errors(path: str, stamp: float):  # stamp: export.json's mtime, so a new export is read again
    return validation_errors(load_run(path))


def show_mistakes(run: RunView) -> None:
    if "export" in run.broken:
        st.info("The mistakes are read through the export, whose record is broken: see the Export tab.")
        return
    if run.export is None:
        st.info(f"The mistakes are those of the exported model, and {run.path} has none yet. "
                f"Make it with: finetune-advisor export {run.path}")
        return
    try:
        errors = _errors(str(run.path), run.file("export").stat().st_mtime)
    except InputError as e:
        st.error(f"The validation split cannot be classified again: {e}")
        return
    st.header(f"Validation accuracy {errors.accuracy:.4f} ({errors.variant})")
    left, right = st.columns(2)
    with left:
        st.subheader("Per class")
        st.dataframe(pd.DataFrame(errors.per_class).round(4), hide_index=True)
    with right:
        fig = go.Figure(go.Heatmap(z=errors.confusion, x=errors.labels, y=errors.labels, colorscale="Blues",
                                   text=errors.confusion, texttemplate="%{text}"))
        fig.update_layout(title="Confusion matrix", xaxis={"title": "predicted"},
                          yaxis={"title": "true", "autorange": "reversed"}, height=360, margin={"t": 40})
        st.plotly_chart(fig, key=f"confusion-{run.path}")
    st.subheader("The most confident mistakes")
    if errors.mistakes:
        st.dataframe(pd.DataFrame(errors.mistakes).round(4), hide_index=True, row_height=64 if "image" in
                     errors.mistakes[0] else None, column_config={"image": st.column_config.ImageColumn("image")})
    else:
        st.info("No validation example is misclassified.")


# --------------------------------------------------------------------------- compare


def show_compare(runs: list[RunView]) -> None:
    if len(runs) < 2:
        st.info("Give several run directories (finetune-advisor dashboard RUN1 RUN2 …) to compare them here.")
    st.dataframe(pd.DataFrame(compare_rows(runs)), hide_index=True)


main()
