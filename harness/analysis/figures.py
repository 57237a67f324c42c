"""Figures (PNG, Agg canvas, no pyplot global state): each function writes one file and returns its path,
or returns None with the reason it was skipped via `Skipped`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from harness.analysis.stats import MEASURABLE

DPI = 120
MAX_BARS = 40  # variants shown in per-variant bar charts (best by MSE)
MAX_CURVES = 12  # variants shown in the cumulative-MSE figure


class Skipped(Exception):
    """A figure that does not apply to this experiment; str() says why."""


def _new(width: float, height: float) -> Figure:
    """A Figure attached to an Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """Lay out, write the PNG and return its path."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _bar_height(n: int) -> float:
    """Figure height for n horizontal bars."""
    return max(3.0, 0.32 * n + 1.4)


def metric_per_variant(ranking: pd.DataFrame, path: Path, baseline: str | None = None) -> Path:
    """Horizontal bars of mean MSE per variant with std-over-seeds error bars, best at the top."""
    rows = ranking.dropna(subset=["mse_mean"]).head(MAX_BARS)
    if rows.empty:
        raise Skipped("no variant with a finite MSE")
    fig = _new(8, _bar_height(len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    colors = ["tab:gray" if v == baseline else "tab:blue" for v in rows["variant"]]
    ax.barh(y, rows["mse_mean"], xerr=rows["mse_std"].fillna(0), color=colors, capsize=3, alpha=0.85)
    ax.set_yticks(y, rows["variant"])
    lo = float((rows["mse_mean"] - rows["mse_std"].fillna(0)).min())
    hi = float((rows["mse_mean"] + rows["mse_std"].fillna(0)).max())
    pad = 0.15 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-12
    ax.set_xlim(max(0.0, lo - pad), hi + pad)
    ax.set_xlabel("MSE (scaled), mean over seeds; error bars: std over seeds")
    extra = f" (best {len(rows)} of {len(ranking)})" if len(ranking) > len(rows) else ""
    ax.set_title(f"Test-stream MSE per variant{extra}")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def improvement_vs_baseline(ranking: pd.DataFrame, baseline: str | None, path: Path) -> Path:
    """Bars of MSE reduction relative to the baseline in % (positive = lower MSE than the baseline)."""
    if baseline is None or baseline not in set(ranking["variant"]):
        raise Skipped("no ogd baseline variant in this experiment")
    rows = ranking[(ranking["variant"] != baseline)].dropna(subset=["mse_change_vs_baseline_pct"]).head(MAX_BARS)
    if rows.empty:
        raise Skipped("no variant besides the baseline")
    fig = _new(8, _bar_height(len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    gain = -rows["mse_change_vs_baseline_pct"].to_numpy(dtype=float)
    ax.barh(y, gain, color=np.where(gain >= 0, "tab:green", "tab:red"), alpha=0.85)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, rows["variant"])
    ax.set_xlabel(f"MSE reduction vs {baseline} (%), from means over seeds; > 0: lower MSE than {baseline}")
    ax.set_title(f"Improvement in MSE over {baseline}")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def effects_forest(effects: pd.DataFrame, path: Path, title: str, interactions: pd.DataFrame | None = None) -> Path:
    """Forest plot: one panel per metric, each term's effect with its 95% interval and a zero line."""
    frames = [effects] + ([interactions] if interactions is not None and not interactions.empty else [])
    table = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) \
        else pd.DataFrame()
    if table.empty or not np.isfinite(table["effect"].to_numpy(dtype=float)).any():
        raise Skipped("no effect could be estimated")
    metrics = [m for m in ("mse", "mae", "mape") if m in set(table["metric"])]
    terms = list(dict.fromkeys(table["term"]))
    fig = _new(4.2 * len(metrics) + 2.5, max(3.0, 0.38 * len(terms) + 1.5))
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    y = np.arange(len(terms))[::-1]
    for ax, m in zip(axes, metrics, strict=True):
        sub = table[table["metric"] == m].set_index("term").reindex(terms)
        eff = sub["effect"].to_numpy(dtype=float)
        lo = sub["ci_low"].to_numpy(dtype=float)
        hi = sub["ci_high"].to_numpy(dtype=float)
        has_ci = np.isfinite(lo) & np.isfinite(hi)
        err = np.vstack([np.where(has_ci, eff - lo, 0), np.where(has_ci, hi - eff, 0)])
        measurable = (sub["verdict"] == MEASURABLE).to_numpy()
        for mask, color, label in ((measurable, "tab:red", "measurable"), (~measurable, "tab:blue", "not measurable")):
            if mask.any():
                ax.errorbar(eff[mask], y[mask], xerr=err[:, mask], fmt="o", color=color, capsize=3, label=label)
        ax.axvline(0, color="black", lw=0.8, ls="--")
        unit = " (scaled)" if m in ("mse", "mae") else ""
        ax.set_xlabel(f"Δ {m.upper()}{unit}, 95% CI")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, terms)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def interactions_heatmap(main: pd.DataFrame, interactions: pd.DataFrame, innovations: list[str], path: Path) -> Path:
    """Matrix of pairwise interaction effects on MSE (diagonal: main effects); * marks a measurable one."""
    inter = interactions[interactions["metric"] == "mse"] if not interactions.empty else interactions
    if inter.empty or len(innovations) < 2:
        raise Skipped("fewer than two innovations: no interactions")
    k = len(innovations)
    mat = np.full((k, k), np.nan)
    star = np.zeros((k, k), dtype=bool)
    idx = {n: i for i, n in enumerate(innovations)}
    for _, r in inter.iterrows():
        a, b = idx[r["innovation"]], idx[r["innovation_b"]]
        mat[a, b] = mat[b, a] = r["effect"]
        star[a, b] = star[b, a] = r["verdict"] == MEASURABLE
    for _, r in main[main["metric"] == "mse"].iterrows():
        if r["innovation"] in idx:
            a = idx[r["innovation"]]
            mat[a, a] = r["effect"]
            star[a, a] = r["verdict"] == MEASURABLE
    finite = mat[np.isfinite(mat)]
    vmax = float(np.abs(finite).max()) if finite.size else 1.0
    vmax = vmax or 1.0
    fig = _new(1.1 * k + 3.5, 1.0 * k + 2.2)
    ax = fig.add_subplot()
    im = ax.imshow(mat, cmap=colormaps["RdBu_r"], norm=TwoSlopeNorm(0.0, -vmax, vmax))
    ax.set_xticks(range(k), innovations, rotation=35, ha="right")
    ax.set_yticks(range(k), innovations)
    for a in range(k):
        for b in range(k):
            if np.isfinite(mat[a, b]):
                ax.text(b, a, f"{mat[a, b]:.2g}" + ("*" if star[a, b] else ""), ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="Δ MSE (scaled)")
    ax.set_title("Factorial effects on MSE: interactions off the diagonal,\nmain effects on it (* measurable)")
    return _save(fig, path)


def cumulative_mse(curves: pd.DataFrame, ranking: pd.DataFrame, baseline: str | None, path: Path) -> Path:
    """Cumulative MSE against online step, mean over seeds per variant (best variants plus the baseline)."""
    if curves.empty or not np.isfinite(curves["cum_mse"].to_numpy(dtype=float)).any():
        raise Skipped("no learning curves for terminated trials")
    order = [v for v in ranking["variant"] if v in set(curves["variant"])]
    shown = order[:MAX_CURVES]
    if baseline in order and baseline not in shown:
        shown.append(baseline)
    fig = _new(9, 5)
    ax = fig.add_subplot()
    cmap = colormaps["tab20"]
    for j, v in enumerate(shown):
        sub = curves[curves["variant"] == v].groupby("step")["cum_mse"].agg(["mean", "count"]).sort_index()
        n = int(curves.loc[curves["variant"] == v, "seed"].nunique()) if "seed" in curves else 1
        style = dict(color="black", lw=2.0, ls="--") if v == baseline else dict(color=cmap(j % 20), lw=1.4)
        if len(sub) < 12:  # few report points (short runs): a line alone would hide a single point
            style["marker"] = "o"
        ax.plot(sub.index, sub["mean"], label=f"{v} (n={n})", **style)
    ax.set_xlabel("online step (test-stream samples)")
    ax.set_ylabel("cumulative MSE (scaled), mean over seeds")
    extra = f" (best {len(shown)} of {len(order)} variants)" if len(order) > len(shown) else ""
    ax.set_title(f"Cumulative MSE along the online stream{extra}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", ncol=2 if len(shown) > 6 else 1)
    return _save(fig, path)


def mse_vs_seconds(points: pd.DataFrame, path: Path, label_col: str | None, title: str) -> Path:
    """Scatter of MSE against trial seconds with the non-dominated (Pareto) points highlighted and joined."""
    pts = points.dropna(subset=["mse", "trial_seconds"])
    if pts.empty:
        raise Skipped("no trial with both MSE and trial_seconds")
    fig = _new(8, 5.5)
    ax = fig.add_subplot()
    front = pts[pts["on_front"]].sort_values("trial_seconds")
    rest = pts[~pts["on_front"]]
    ax.scatter(rest["trial_seconds"], rest["mse"], s=22, color="tab:blue", alpha=0.6, label="dominated")
    ax.step(front["trial_seconds"], front["mse"], where="post", color="tab:red", lw=1.2)
    ax.scatter(front["trial_seconds"], front["mse"], s=46, color="tab:red", zorder=3, label="Pareto front")
    if label_col and len(pts) <= 25:
        for _, r in pts.iterrows():
            ax.annotate(str(r[label_col]), (r["trial_seconds"], r["mse"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("trial wall-clock time (s)")
    ax.set_ylabel("MSE (scaled)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def memory_diagnostics(ok: pd.DataFrame, ranking: pd.DataFrame, path: Path) -> Path:
    """Two panels per variant: memory triggers and attention entropy (mean ± std over trials)."""
    cols = [c for c in ("memory_triggers", "attention_entropy_mean") if c in ok.columns]
    if not cols or ok[cols].apply(pd.to_numeric, errors="coerce").notna().sum().sum() == 0:
        raise Skipped("memory diagnostics are null for every trial (no model with memory)")
    order = [v for v in ranking["variant"]][:MAX_BARS]
    stats_ = ok.groupby("variant")[cols].agg(["mean", "std"]).reindex(order)
    stats_ = stats_[stats_.xs("mean", axis=1, level=1).notna().any(axis=1)]
    fig = _new(11, _bar_height(len(stats_)))
    axes = fig.subplots(1, 2, sharey=True, squeeze=False)[0]
    y = np.arange(len(stats_))[::-1]
    labels = {"memory_triggers": "memory triggers per trial (count)",
              "attention_entropy_mean": "attention entropy, mean over reads (nats)"}
    for ax, c, color in zip(axes, ("memory_triggers", "attention_entropy_mean"), ("tab:purple", "tab:orange"),
                            strict=True):
        if c in cols:
            ax.barh(y, stats_[(c, "mean")].fillna(0), xerr=stats_[(c, "std")].fillna(0), color=color, alpha=0.8,
                    capsize=3)
        else:
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center")
        ax.set_xlabel(labels[c])
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, stats_.index)
    fig.suptitle("Memory diagnostics per variant (mean ± std over trials; variants without memory omitted)")
    return _save(fig, path)


def importances_bar(importances: pd.DataFrame, path: Path) -> Path:
    """Grouped horizontal bars of normalised parameter importances, one colour per evaluator."""
    if importances.empty:
        raise Skipped("no importances were computed")
    table = importances.pivot_table(index="param", columns="evaluator", values="importance", aggfunc="mean")
    table = table.loc[table.mean(axis=1).sort_values(ascending=True).index]
    fig = _new(8, _bar_height(len(table) * max(1, table.shape[1]) // 2 + 2))
    ax = fig.add_subplot()
    h = 0.8 / table.shape[1]
    for j, ev in enumerate(table.columns):
        ax.barh(np.arange(len(table)) + j * h, table[ev].fillna(0), height=h, label=ev)
    ax.set_yticks(np.arange(len(table)) + h * (table.shape[1] - 1) / 2, table.index)
    ax.set_xlabel("importance for MSE (normalised to sum 1 per evaluator)")
    ax.set_title("Hyperparameter importances for MSE (Optuna: " + ", ".join(map(str, table.columns)) + ")")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def two_experiments(table: pd.DataFrame, label_a: str, label_b: str, path: Path, metric: str = "mse",
                    title: str = "in two experiments") -> Path:
    """Each variant's mean `metric` with its 95% t interval in two experiments, side by side (one row per
    variant, A and B as two markers, ordered by A's mean): `table` is harness.analysis.compare's table."""
    rows = table.dropna(subset=["mean_a", "mean_b"], how="all").sort_values("mean_a").head(MAX_BARS)
    if rows.empty:
        raise Skipped(f"no variant with a finite {metric} in both experiments")
    fig = _new(8, _bar_height(len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    for side, label, shift, color in (("a", label_a, 0.15, "tab:blue"), ("b", label_b, -0.15, "tab:orange")):
        mean = rows[f"mean_{side}"].to_numpy(dtype=float)
        low = (mean - rows[f"ci_low_{side}"].to_numpy(dtype=float))
        high = (rows[f"ci_high_{side}"].to_numpy(dtype=float) - mean)
        errors = np.nan_to_num(np.vstack([low, high]))  # [2, n]: below and above the mean
        n = rows[f"n_{side}"].to_numpy()
        ax.errorbar(mean, y + shift, xerr=errors, fmt="o", color=color, capsize=3,
                    label=f"{label} (seeds: {int(n.min())}-{int(n.max())})" if n.min() != n.max()
                    else f"{label} ({int(n.min())} seeds)")
    ax.set_yticks(y, rows["variant"])
    ax.set_xlabel(f"{metric}, mean over seeds; bars: 95% t interval")
    ax.set_title(f"{metric} per variant {title}")
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
