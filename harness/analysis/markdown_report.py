"""report.md: summary, ranking, effects, one sentence per finding written from the numbers, figure links."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness.analysis.effects import SIGN_CONVENTIONS
from harness.analysis.load import ExperimentData
from harness.analysis.stats import INCONCLUSIVE, MEASURABLE, NOT_ESTIMATED, tail_probability
from harness.analysis.tables import (
    decimals_for,
    effects_markdown,
    fmt_num,
    fmt_p,
    is_finite,
    markdown_table,
    ranking_markdown,
)

if TYPE_CHECKING:
    from harness.analysis.result import AnalysisResult

REPORT_MAX_ROWS = 40


def _decimals(effect: float, lo: float, hi: float) -> int:
    """Decimals for an effect and its interval: two significant digits of the half-width (>= 4 below 1)."""
    spread = (hi - lo) / 2 if is_finite(lo) and is_finite(hi) and hi > lo else abs(effect)
    d = decimals_for(spread)
    return max(4, d) if abs(effect) < 1 else d


def _ci_text(lo: float, hi: float, p: float, d: int) -> str:
    """'95% CI a to b, p=x'."""
    ptxt = fmt_p(p)
    return f"95% CI {fmt_num(lo, d)} to {fmt_num(hi, d)}, p" + (ptxt if ptxt.startswith("<") else f"={ptxt}")


def finding_sentence(row: pd.Series | dict[str, Any], metric_label: str = "MSE") -> str:
    """One sentence stating an effect row's finding (kind loo/oat/main/interaction/vs_baseline) from its numbers."""
    r = dict(row)
    kind, term, v = r["kind"], r["term"], r["verdict"]
    e, lo, hi, p = (float(r[k]) if is_finite(r[k]) else math.nan for k in ("effect", "ci_low", "ci_high", "p_value"))
    name = f"`{term}`" if kind != "interaction" else f"`{r['innovation']}` × `{r['innovation_b']}`"
    if v == NOT_ESTIMATED:
        return f"{name}: not estimated ({r.get('note') or 'no data'})."
    d = _decimals(e, lo, hi)
    if v != MEASURABLE:
        if not (is_finite(lo) and is_finite(hi)):
            why = r.get("note") or "single seed: no interval"
            return f"{name}: no measurable effect (Δ {metric_label} {fmt_num(e, d)}; {why})."
        if v == INCONCLUSIVE:
            return (f"{name}: inconclusive (Δ {metric_label} {fmt_num(e, d)}, {_ci_text(lo, hi, p, d)}): the bootstrap "
                    "interval and the t-test disagree; more seeds would settle it.")
        return f"{name}: no measurable effect (Δ {metric_label} {fmt_num(e, d)}, {_ci_text(lo, hi, p, d)})."
    if kind == "loo":
        # the sentence speaks of switching the innovation off: change = without - full = -effect
        change, c_lo, c_hi = -e, -hi, -lo
        verb = "raises" if change > 0 else "lowers"
        a, b = (c_lo, c_hi) if change > 0 else (-c_hi, -c_lo)
        tail = "" if change > 0 else " (the full variant does better without it)"
        return (f"Switching off `{term}` {verb} {metric_label} by {fmt_num(abs(change), d)} "
                f"({_ci_text(a, b, p, d)}): a measurable effect{tail}.")
    if kind in ("oat", "main"):
        verb = "raises" if e > 0 else "lowers"
        a, b = (lo, hi) if e > 0 else (-hi, -lo)
        where = " on the base variant" if kind == "oat" else ", averaged over the other innovations and seeds,"
        tail = " (it hurts)" if e > 0 else ""
        return (f"Switching on `{term}`{where} {verb} {metric_label} by {fmt_num(abs(e), d)} "
                f"({_ci_text(a, b, p, d)}): a measurable effect{tail}.")
    if kind == "interaction":
        how = "more" if e < 0 else "less"
        return (f"{name} interact (Δ {metric_label} {fmt_num(e, d)}, {_ci_text(lo, hi, p, d)}): switching both on "
                f"lowers {metric_label} {how} than their separate effects add up to — a measurable interaction.")
    if kind == "vs_baseline":
        base = r.get("without_variant") or "the baseline"
        rel = f", {abs(float(r['rel_effect_pct'])):.1f}%" if is_finite(r.get("rel_effect_pct")) else ""
        word = "lower" if e < 0 else "higher"
        a, b = (-hi, -lo) if e < 0 else (lo, hi)
        return (f"{name} has {word} {metric_label} than `{base}` by {fmt_num(abs(e), d)}{rel} "
                f"({_ci_text(a, b, p, d)}): a measurable difference.")
    return f"{name}: Δ {metric_label} {fmt_num(e, d)} ({_ci_text(lo, hi, p, d)})."


def findings(effects: pd.DataFrame, interactions: pd.DataFrame | None = None) -> list[str]:
    """One sentence per MSE effect; for interactions one per measurable/inconclusive pair, the rest summarised."""
    out = [finding_sentence(r) for _, r in effects[effects["metric"] == "mse"].iterrows()] if len(effects) else []
    if interactions is not None and not interactions.empty:
        inter = interactions[interactions["metric"] == "mse"]
        shown = inter[inter["verdict"].isin([MEASURABLE, INCONCLUSIVE])]
        out += [finding_sentence(r) for _, r in shown.iterrows()]
        rest = len(inter) - len(shown)
        if rest:
            out.append(f"The other {rest} pairwise interaction(s) show no measurable effect (see the table).")
    return out


def _summary_lines(data: ExperimentData, res: AnalysisResult) -> list[str]:
    """Bullet lines of the experiment summary."""
    meta, ok = data.meta, data.ok
    seeds = sorted({int(s) for s in ok["seed"].dropna()})
    planned = meta.get("seeds")
    planned_txt = f" (planned: {len(planned) if isinstance(planned, (list, tuple)) else planned})" if planned else ""
    lines = [
        f"- Space: `{meta.get('space') or _first(data.trials_all, 'space') or 'n/a'}`; design: `{data.design}`; "
        f"unit: `{data.unit or 'n/a'}`",
        f"- Seeds: {len(seeds)}{planned_txt}: {', '.join(map(str, seeds)) if seeds else 'none'}",
        f"- Trials: {len(data.trials_all)} in total, {len(ok)} terminated and used, {len(data.errored)} errored"
        + (f", {len(data.diverged)} terminated with a non-finite MSE (left out)" if len(data.diverged) else ""),
    ]
    if "steps" in ok.columns and ok["steps"].notna().any():
        s = ok["steps"].dropna()
        steps = f"{int(s.iloc[0])}" if s.nunique() == 1 else f"{int(s.min())} to {int(s.max())}"
        lines.append(f"- Online steps per trial: {steps}")
    setting = [f"{c}={_first(ok, c)}" for c in ("dataset", "features", "seq_len", "pred_len", "feedback_delay")
               if c in ok.columns and _first(ok, c) is not None]
    if setting:
        lines.append("- Data: " + ", ".join(setting))
    if data.reference_variant and data.design in ("loo", "oat"):
        lines.append(f"- Reference variant ({'full' if data.design == 'loo' else 'base'}): `{data.reference_variant}`")
    if data.innovations and data.design in ("loo", "oat", "factorial"):
        lines.append("- Innovations: " + ", ".join(f"`{i}`" for i in data.innovations))
    base = data.baseline_variant or "ogd"
    lines.append(f"- Baseline: `{base}`" if base in set(ok["variant"])
                 else f"- Baseline: none (no terminated `{base}` trial): changes vs ogd are n/a")
    for col, label in (("device", "Devices"), ("git_commit", "Git commits")):
        if col in ok.columns and ok[col].notna().any():
            vals = sorted({str(x) for x in ok[col].dropna()})
            lines.append(f"- {label}: " + ", ".join(f"`{x}`" for x in vals[:6]) + (" …" if len(vals) > 6 else ""))
    lines.append(f"- Intervals: 95% {res.ci_method} percentile bootstrap over seeds, {res.n_boot} resamples, "
                 f"seed {res.seed}")
    return lines


def _first(frame: pd.DataFrame, col: str) -> Any:
    """The first non-null value of a column, or None."""
    if col not in frame.columns or not frame[col].notna().any():
        return None
    return frame[col].dropna().iloc[0]


def _fig(res: AnalysisResult, key: str, alt: str) -> str:
    """Markdown image link (relative) for a written figure, else an empty string."""
    path = res.figures.get(key)
    return f"\n![{alt}]({path.name})\n" if path is not None else ""


def _error_lines(data: ExperimentData) -> list[str]:
    """Distinct errors (first line) with their counts and variants."""
    if data.errored.empty:
        return []
    err = data.errored.copy()
    err["first"] = err["error"].fillna("(no message)").astype(str).str.strip().str.split("\n").str[0].str[:160] \
        if "error" in err.columns else "(no message)"
    lines = []
    for msg, grp in err.groupby("first"):
        variants = ", ".join(f"`{v}`" for v in sorted(set(grp["variant"]))[:5])
        lines.append(f"- {len(grp)} × {msg} ({variants})")
    return lines


def build_report(data: ExperimentData, res: AnalysisResult, sequential: str | None = None) -> str:
    """The text of report.md for an analysed experiment; `sequential`: the Sequential rule section of an
    --until-resolved experiment (harness.analysis.rounds.sequential_section), after the effects."""
    out = [f"# Ablation analysis: {data.experiment}", "", "## Summary", ""]
    out += _summary_lines(data, res)
    if data.warnings or res.notes:
        out += ["", "Notes:", ""] + [f"- {w}" for w in data.warnings + res.notes]
    errs = _error_lines(data)
    if errs:
        out += ["", "## Errored trials", ""] + errs
    out += ["", "## Ranking", ""]
    if res.ranking.empty:
        out.append("_No terminated trial: nothing to rank._")
    else:
        out.append("MSE, MAE and MAPE: mean ± std over seeds; MSE and MAE on the scaled data. Sorted by MSE.")
        out += ["", ranking_markdown(res.ranking, data.baseline_variant, REPORT_MAX_ROWS)]
    out.append(_fig(res, "metric_per_variant", "MSE per variant"))
    out.append(_fig(res, "improvement_vs_ogd", "Improvement over ogd"))

    out += ["## Effects", ""]
    out += _effects_section(data, res)
    if sequential:
        out += [sequential.rstrip(), ""]

    if data.design == "optuna":
        out += ["## Hyperparameter importances and cost", ""] + _optuna_section(res)

    out += ["## Learning curves", "", _fig(res, "cumulative_mse", "Cumulative MSE").strip() or "_skipped_", ""]
    out += ["## Cost", "", _cost_sentence(res), _fig(res, "mse_vs_seconds", "MSE vs seconds")]
    out += ["## Memory diagnostics", "", _fig(res, "memory_diagnostics", "Memory diagnostics").strip() or "_skipped_",
            ""]
    if res.skipped:
        out += ["## Figures skipped", ""] + [f"- `{k}.png`: {why}" for k, why in res.skipped.items()] + [""]
    out += ["## Method", "", _method_text(res) if data.design != "optuna" else _optuna_method_text()]
    return "\n".join(out).replace("\n\n\n", "\n\n").rstrip() + "\n"


def _effects_section(data: ExperimentData, res: AnalysisResult) -> list[str]:
    """Effects table, findings and forest/heatmap links."""
    eff = res.effects
    lines: list[str] = []
    if data.design == "optuna":
        return ["_An optuna design samples configurations; effects are given as importances below._", ""]
    if eff.empty:
        why = {"presets": "a presets design without a baseline variant compares named variants only (see ranking)"}
        return [f"_No effects: {why.get(data.design, 'no innovation could be contrasted')}._", ""]
    kind = str(eff["kind"].iloc[0])
    title = {"loo": "Leave-one-out contributions", "oat": "One-at-a-time contributions", "main": "Main effects",
             "vs_baseline": f"Differences from `{data.baseline_variant}`"}.get(kind, "Effects")
    lines += [f"### {title}", "", effects_markdown(eff, SIGN_CONVENTIONS[kind])]
    if res.interactions is not None and not res.interactions.empty:
        lines += ["### Pairwise interactions", "", effects_markdown(res.interactions, SIGN_CONVENTIONS["interaction"])]
    lines += ["### Findings (MSE)", ""] + [f"- {f}" for f in findings(eff, res.interactions)]
    lines.append("")
    lines.append(_fig(res, "effects_forest", "Effects with 95% intervals"))
    lines.append(_fig(res, "interactions_heatmap", "Interactions"))
    return lines


def _optuna_section(res: AnalysisResult) -> list[str]:
    """Importances table and the top parameter per evaluator."""
    imp = res.importances
    lines: list[str] = []
    if imp is None or imp.empty:
        lines.append("_No importances could be computed (see notes)._")
    else:
        table = imp.pivot_table(index="param", columns="evaluator", values="importance", aggfunc="mean")
        table = table.loc[table.mean(axis=1).sort_values(ascending=False).index]
        rows = [[f"`{p}`"] + [fmt_num(table.loc[p, c], 3) for c in table.columns] for p in table.index]
        lines += [markdown_table(["Parameter"] + [f"{c} importance" for c in table.columns], rows), ""]
        for ev in table.columns:
            top = table[ev].idxmax()
            lines.append(f"- {ev}: the most important parameter for MSE is `{top}` ({table.loc[top, ev]:.2f} of the "
                         "total).")
        n = int(imp["n_trials"].max())
        lines.append(f"- Importances are point estimates from {n} trials without intervals"
                     + (": with fewer than about 100 trials their order is unstable." if n < 100 else "."))
        lines.append(_fig(res, "importances", "Importances"))
    return lines + [""]


def _cost_sentence(res: AnalysisResult) -> str:
    """A sentence on the Pareto front of MSE vs seconds."""
    pts = res.pareto
    if pts is None or pts.empty or not pts["on_front"].any():
        return "_No trial with both MSE and trial seconds._"
    front = pts[pts["on_front"]]
    best = front.loc[front["mse"].idxmin()]
    fast = front.loc[front["trial_seconds"].idxmin()]
    label = "variant" if "trial_id" not in pts.columns else "trial_id"
    unit = "trials" if label == "trial_id" else "variants"
    return (f"{len(front)} of {len(pts)} {unit} are on the Pareto front of MSE vs seconds. Lowest MSE: "
            f"{fmt_num(best['mse'])} in {best['trial_seconds']:.1f} s (`{best['variant']}`); fastest: "
            f"{fast['trial_seconds']:.1f} s at MSE {fmt_num(fast['mse'])} (`{fast['variant']}`).")


def _optuna_method_text() -> str:
    """How importances and the Pareto front are computed."""
    return ("Importances: Optuna's FanovaImportanceEvaluator (64 trees; needs scikit-learn) and "
            "PedAnovaImportanceEvaluator (target quantile raised so the best group holds at least 10 trials) on an "
            "in-memory study built from the terminated trials, objective MSE, parameters the knob (or, for unit "
            "'innovation', innov_) columns that vary and are never null. Pareto front: the trials no other trial "
            "beats on both MSE and trial seconds. Only trials with status TERMINATED and a finite MSE count.\n")


def _method_text(res: AnalysisResult) -> str:
    """How intervals, tests and verdicts are computed."""
    q8 = tail_probability(8, res.ci_method)
    return (
        "Effects are paired by seed. Intervals: bootstrap over seeds (resampled with replacement, "
        f"{res.n_boot} resamples, generator seed {res.seed}); method `{res.ci_method}` "
        + ("(Hesterberg's expanded percentile interval: the percentiles are widened to correct the plain percentile "
           f"interval's under-coverage with few seeds, e.g. {100 * q8:.2f}% and {100 - 100 * q8:.2f}% at 8 seeds). "
           if res.ci_method == "expanded" else "(plain 2.5% and 97.5% percentiles). ")
        + "p-values: paired t-test across seeds (factorial: t-test of the per-seed contrasts). "
        "An effect is called measurable only when its interval excludes zero and p < 0.05; inconclusive when the two "
        "disagree; with a single seed there is no interval and no effect is called measurable. Factorial main effect: "
        "mean response with the innovation on minus off over all other combinations and seeds; interaction: "
        "(on,on − on,off − off,on + off,off)/2. Only trials with status TERMINATED and a finite MSE count.\n"
    )
