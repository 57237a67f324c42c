"""Seeds until the answer is clear: a group-sequential test of an ablation design's effects.

The design runs in rounds of `seeds_per_round` seeds per configuration, seed (replicate `rep`) r belonging
to round r // seeds_per_round. After each round every effect of the design is a paired contrast over the
seeds seen so far: per seed, sum_c w_c * y_c (with minus without, as in harness.analysis.effects; < 0 means
the innovation lowers the error). An effect is

  * resolved_effect: the sequential test rejects zero at the design's family-wise level alpha;
  * resolved_null: its repeated confidence interval lies inside +-precision x the reference mean
    ("no effect larger than P");
  * unresolved: neither, yet. The next round runs only the configurations unresolved effects need; the
    design stops when every effect is resolved or max_seeds seeds are reached.

Method (why not AdaStop: see docs/sequential.md): per effect a paired t statistic compared with a
Lan-DeMets alpha-spending boundary (O'Brien-Fleming-like by default, Pocock-like on request) computed by
numerical integration on the planned information fractions n / max_seeds and converted to the t scale
through its nominal level (the "significance level" approach, Jennison & Turnbull 2000, ch. 11). The
effects are combined by Holm's step-down in its group-sequential form (Maurer & Bretz 2013): with m
hypotheses not rejected, each is tested with the boundary for level alpha / m, and a hypothesis crossing
at any look so far is rejected, which frees level for the others. The equivalence stop uses repeated
confidence intervals (Jennison & Turnbull 1989) at level alpha / n_effects: simultaneous over effects and
looks, so stopping an effect when its interval is inside the margin keeps P(some effect larger than P is
called "no effect") <= alpha. A rejected effect reports its interval at the Holm level it was rejected at.

Pure numpy/scipy; `iqm_and_probability_of_improvement` uses rliable.metrics.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import optimize, special, stats

SPENDING = ("obrien-fleming", "pocock")
KINDS = ("loo", "oat", "main", "interaction")
RESOLVED_EFFECT = "resolved_effect"
RESOLVED_NULL = "resolved_null"
UNRESOLVED = "unresolved"
STATUSES = (RESOLVED_EFFECT, RESOLVED_NULL, UNRESOLVED)

DEFAULT_ALPHA = 0.05
DEFAULT_PRECISION = 0.02
DEFAULT_SEEDS_PER_ROUND = 4
DEFAULT_MAX_SEEDS = 32
DEFAULT_SPREAD = (0.05, 0.09)  # paired spread between seeds, fraction of the reference MSE (measured 5-9%)
DEFAULT_REFERENCE_MSE = 0.06
DEFAULT_EFFECT_SIZES = (0.0, 0.02, 0.05, 0.15)

METHOD = ("group-sequential paired t-tests, Lan-DeMets {spending} alpha spending over the planned rounds, "
          "Holm step-down across effects (Maurer-Bretz), repeated confidence intervals at alpha/{m} for the "
          "+-{precision:g} equivalence stop")

_GRID = 401  # Simpson points of the numerical integration (odd)
_TAIL = 8.5  # standard deviations of the grid around the drift


# ----------------------------------------------------------------------------------------------- validation


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    """alpha as a float in (0, 1), else ValueError naming it."""
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < float(alpha) < 1:
        raise ValueError(f"{name} must be in (0, 1), got {alpha!r}")
    return float(alpha)


def _check_int(value: int, name: str, low: int) -> int:
    """value as an int >= low, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_positive(value: float, name: str) -> float:
    """value as a finite float > 0, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_spending(spending: str) -> str:
    """spending if known, else ValueError naming it."""
    if spending not in SPENDING:
        raise ValueError(f"spending must be one of {', '.join(SPENDING)}, got {spending!r}")
    return spending


# ----------------------------------------------------------------------------------------------- boundaries


def spent_alpha(fraction: float, alpha: float, spending: str = "obrien-fleming") -> float:
    """Two-sided alpha spent by information fraction t in (0, 1] (Lan-DeMets spending functions).

    O'Brien-Fleming-like: 4 - 4 Phi(z_{1-alpha/4} / sqrt(t)), i.e. the one-sided Lan-DeMets O'Brien-Fleming
    function at alpha/2 on each side (the two-sided convention of gsDesign, rpact and ldbounds);
    Pocock-like: alpha ln(1 + (e - 1) t).
    """
    _check_alpha(alpha)
    _check_spending(spending)
    t = min(max(float(fraction), 0.0), 1.0)
    if t <= 0:
        return 0.0
    if t >= 1:
        return alpha
    if spending == "obrien-fleming":
        return float(4 * stats.norm.sf(stats.norm.isf(alpha / 4) / math.sqrt(t)))
    return float(alpha * math.log(1 + (math.e - 1) * t))


def _simpson(a: float, b: float, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid of m (odd) points on [a, b] and its Simpson weights."""
    x = np.linspace(a, b, m)
    w = np.ones(m)
    w[1:-1:2] = 4
    w[2:-1:2] = 2
    return x, w * (b - a) / (3 * (m - 1))


def _grid_size(dt: float, width: float) -> int:
    """Odd number of grid points keeping the spacing below a sixth of the increment's sd."""
    m = max(_GRID, int(math.ceil(6 * width / math.sqrt(dt))) | 1)
    return min(m | 1, 4001)


def _exit(b: float, x: np.ndarray, wd: np.ndarray, dt: float, shift: float) -> float:
    """P(|S_next| >= b, continued so far) for S_next = S + N(shift, dt), S on grid x with weighted density wd."""
    sd = math.sqrt(dt)
    mu = x + shift
    return float(wd @ (special.ndtr((-b - mu) / sd) + special.ndtr((mu - b) / sd)))


def _propagate(b: float, x: np.ndarray, wd: np.ndarray, dt: float, shift: float, t_new: float,
               center: float) -> tuple[np.ndarray, np.ndarray]:
    """Sub-density of S_next on |S_next| < b (grid and Simpson-weighted values) after continuing."""
    half = _TAIL * math.sqrt(t_new)
    lo, hi = max(-b, center - half), min(b, center + half)
    if not hi > lo:
        return np.zeros(1), np.zeros(1)
    m = _grid_size(dt, hi - lo)
    y, w = _simpson(lo, hi, m)
    sd = math.sqrt(dt)
    dens = (np.exp(-0.5 * ((y[:, None] - x[None, :] - shift) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))) @ wd
    return y, w * dens


@lru_cache(maxsize=4096)
def _boundary_state(fractions: tuple[float, ...], alpha: float, spending: str
                    ) -> tuple[tuple[float, ...], np.ndarray, np.ndarray]:
    """Z-scale boundaries for looks at `fractions` (increasing, in (0, 1]) plus the null sub-density after the
    last look (for extending the prefix). c_j depends only on fractions[:j + 1]."""
    t = fractions[-1]
    target = spent_alpha(t, alpha, spending) - spent_alpha(fractions[-2], alpha, spending) if len(fractions) > 1 \
        else spent_alpha(t, alpha, spending)
    if len(fractions) == 1:
        c = float(stats.norm.isf(target / 2)) if target > 0 else math.inf
        b = c * math.sqrt(t)
        x, w = _simpson(-min(b, _TAIL * math.sqrt(t)), min(b, _TAIL * math.sqrt(t)), _GRID)
        wd = w * stats.norm.pdf(x, scale=math.sqrt(t))
        return (c,), x, wd
    prev, x, wd = _boundary_state(fractions[:-1], alpha, spending)
    dt = t - fractions[-2]
    if target <= 1e-13:
        # Too little to resolve numerically: the marginal boundary, which is (slightly) conservative.
        c = float(stats.norm.isf(max(target, 1e-300) / 2))
    elif _exit(0.0, x, wd, dt, 0.0) <= target:
        c = 0.0
    else:
        def excess(cz: float) -> float:
            return _exit(cz * math.sqrt(t), x, wd, dt, 0.0) - target
        c = float(optimize.brentq(excess, 0.0, 40.0, xtol=1e-10))
    b = c * math.sqrt(t)
    y, wy = _propagate(b, x, wd, dt, 0.0, t, 0.0)
    return (*prev, c), y, wy


def boundaries(fractions: Sequence[float], alpha: float, spending: str = "obrien-fleming") -> tuple[float, ...]:
    """Two-sided z boundaries c_1..c_J of a group-sequential test at level alpha with looks at information
    fractions `fractions` (increasing, in (0, 1]; 1 = the planned maximum): P_0(some |Z_j| >= c_j) = spent
    alpha at the last fraction (all of alpha when it is 1)."""
    _check_alpha(alpha)
    _check_spending(spending)
    fr = tuple(float(f) for f in fractions)
    if not fr or any(not 0 < f <= 1 for f in fr) or any(b <= a for a, b in zip(fr, fr[1:], strict=False)):
        raise ValueError(f"fractions must be increasing and in (0, 1], got {list(fractions)!r}")
    return _boundary_state(fr, float(alpha), spending)[0]


def crossing_probabilities(bounds: Sequence[float], fractions: Sequence[float], drift: float) -> np.ndarray:
    """P(first crossing at look j) of |Z_j| >= bounds[j] when Z_j = S_j / sqrt(t_j), S_t Brownian with drift
    `drift` (= effect / sd * sqrt(max_seeds)) observed at `fractions`."""
    fr = [float(f) for f in fractions]
    out = np.zeros(len(fr))
    t0 = fr[0]
    b0 = bounds[0] * math.sqrt(t0)
    sd0 = math.sqrt(t0)
    out[0] = special.ndtr((-b0 - drift * t0) / sd0) + special.ndtr((drift * t0 - b0) / sd0)
    half = _TAIL * sd0
    lo, hi = max(-b0, drift * t0 - half), min(b0, drift * t0 + half)
    if not hi > lo:
        return out
    x, w = _simpson(lo, hi, _GRID)
    wd = w * stats.norm.pdf(x, loc=drift * t0, scale=sd0)
    for j in range(1, len(fr)):
        dt = fr[j] - fr[j - 1]
        b = bounds[j] * math.sqrt(fr[j])
        out[j] = _exit(b, x, wd, dt, drift * dt)
        x, wd = _propagate(b, x, wd, dt, drift * dt, fr[j], drift * fr[j])
        if not wd.any():
            break
    return out


@lru_cache(maxsize=65536)
def _t_criticals(looks: tuple[int, ...], max_seeds: int, level: float, spending: str) -> tuple[float, ...]:
    """t-scale critical values at looks with `looks` seeds each (same nominal two-sided level as the z
    boundary for level `level` on fractions looks / max_seeds)."""
    zb = boundaries([n / max_seeds for n in looks], level, spending)
    return tuple(float(special.stdtrit(n - 1, special.ndtr(c))) if math.isfinite(c) else math.inf
                 for n, c in zip(looks, zb, strict=True))


def nominal_levels(looks: Sequence[int], max_seeds: int, level: float, spending: str = "obrien-fleming"
                   ) -> tuple[float, ...]:
    """Two-sided nominal p-value thresholds at looks with `looks` seeds (boundaries for `level`)."""
    zb = boundaries([n / max_seeds for n in looks], level, spending)
    return tuple(float(2 * special.ndtr(-c)) for c in zb)


# ----------------------------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class EffectSpec:
    """One effect of a design: a contrast over configurations, paired by seed.

    weights: (config, weight) pairs, the per-seed contrast is sum w * y (with minus without: < 0 means the
    innovation lowers the error). reference: the configuration whose mean is 100% (relative effect and
    equivalence margin); it is always among `configs`.
    """

    name: str
    kind: str
    weights: tuple[tuple[str, float], ...]
    reference: str

    def __post_init__(self) -> None:
        """Validate kind, weights and reference."""
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.weights or len({c for c, _ in self.weights}) != len(self.weights):
            raise ValueError(f"weights of effect {self.name!r} must name distinct configurations")
        if not any(w != 0 for _, w in self.weights) or abs(sum(w for _, w in self.weights)) > 1e-9:
            raise ValueError(f"weights of effect {self.name!r} must be a contrast (nonzero, summing to 0)")

    @property
    def configs(self) -> tuple[str, ...]:
        """Configurations the effect needs (weighted ones and the reference)."""
        names = [c for c, w in self.weights if w != 0]
        return tuple(names) if self.reference in names else (*names, self.reference)


def loo_effects(reference: str, without: Mapping[str, str]) -> list[EffectSpec]:
    """Leave-one-out: effect of innovation i = full (reference) minus full-without-i; `without` maps
    innovation -> configuration name."""
    return [EffectSpec(i, "loo", ((reference, 1.0), (c, -1.0)), reference) for i, c in without.items()]


def oat_effects(base: str, with_: Mapping[str, str]) -> list[EffectSpec]:
    """One-at-a-time: effect of innovation i = base-with-i minus base (the reference); `with_` maps
    innovation -> configuration name."""
    return [EffectSpec(i, "oat", ((c, 1.0), (base, -1.0)), base) for i, c in with_.items()]


def factorial_weights(cells: np.ndarray, term: tuple[int, ...]) -> np.ndarray:
    """Contrast weights of `term` over a complete 2^k factorial's cells [n_cells, k] (bool), the convention of
    harness.analysis.effects.contrast_weights: main effect = mean(on) - mean(off); two factors =
    (mean(on,on) - mean(on,off) - mean(off,on) + mean(off,off)) / 2."""
    sub = np.asarray(cells, dtype=bool)[:, list(term)]
    sign = np.prod(np.where(sub, 1.0, -1.0), axis=1)
    return sign / (2 ** (len(term) - 1) * (sub.shape[0] / 2 ** len(term)))


def factorial_effects(cells: Mapping[str, Mapping[str, bool]], innovations: Sequence[str],
                      reference: str | None = None, interactions: bool = True) -> list[EffectSpec]:
    """Main effects and pairwise interactions of a complete 2^k factorial; `cells` maps configuration ->
    {innovation: on}. reference: default the all-on cell."""
    innov = list(innovations)
    names = list(cells)
    mat = np.array([[bool(cells[c][i]) for i in innov] for c in names], dtype=bool).reshape(len(names), len(innov))
    if len({tuple(r) for r in mat}) != 2 ** len(innov) or len(names) != 2 ** len(innov):
        raise ValueError(f"cells must be the complete 2^{len(innov)} factorial, got {len(names)} cells")
    if reference is None:
        reference = names[int(np.flatnonzero(mat.all(axis=1))[0])]
    if reference not in cells:
        raise ValueError(f"reference must be one of the cells, got {reference!r}")
    terms: list[tuple[int, ...]] = [(a,) for a in range(len(innov))]
    if interactions:
        terms += list(itertools.combinations(range(len(innov)), 2))
    out = []
    for term in terms:
        w = factorial_weights(mat, term)
        pairs = tuple((c, float(x)) for c, x in zip(names, w, strict=True))
        if len(term) == 1:
            out.append(EffectSpec(innov[term[0]], "main", pairs, reference))
        else:
            out.append(EffectSpec(f"{innov[term[0]]} x {innov[term[1]]}", "interaction", pairs, reference))
    return out


def effects_for_design(design: str, configs: Mapping[str, Mapping[str, bool]], innovations: Sequence[str],
                       reference: str, interactions: bool = True) -> list[EffectSpec]:
    """Every effect of a loo, oat or factorial design. configs: configuration -> {innovation: on};
    reference: the full variant (loo), the base (oat) or the cell that is 100% (factorial). loo/oat partners
    are the configurations equal to the reference with one innovation flipped."""
    if reference not in configs:
        raise ValueError(f"reference must be one of the configurations, got {reference!r}")
    if design == "factorial":
        return factorial_effects(configs, innovations, reference, interactions)
    if design not in ("loo", "oat"):
        raise ValueError(f"design must be loo, oat or factorial, got {design!r}")
    vec = {c: tuple(bool(v.get(i, False)) for i in innovations) for c, v in configs.items()}
    partners = {}
    for k, i in enumerate(innovations):
        want = tuple(not v if j == k else v for j, v in enumerate(vec[reference]))
        match = sorted(c for c, v in vec.items() if v == want)
        if not match:
            raise ValueError(f"configs has no partner of the reference for innovation {i!r}")
        partners[i] = match[0]
    return loo_effects(reference, partners) if design == "loo" else oat_effects(reference, partners)


# ----------------------------------------------------------------------------------------------- plan & decisions


@dataclass(frozen=True)
class EffectDecision:
    """Where one effect stands after a round.

    estimate: mean per-seed contrast (with - without); rel_pct: in % of the reference mean; ci_low/ci_high
    (and rel_*_pct): repeated confidence interval at the last look, at `interval_level`: the Holm level
    alpha / m at which a resolved_effect was rejected (so it excludes zero like the test), else
    alpha / n_effects (simultaneous over effects and looks: the interval of the equivalence stop);
    p_value: the unadjusted paired t-test p at the last look; nominal_level: the p the Holm level's boundary
    asks for at that look; holm_level: alpha / m; sd_rel: sd of the per-seed contrast / reference mean;
    decided_round: the round (0-based) of the resolution.
    """

    name: str
    kind: str
    status: str
    configs: tuple[str, ...]
    n_seeds: int
    estimate: float
    reference_mean: float
    rel_pct: float
    ci_low: float
    ci_high: float
    rel_ci_low_pct: float
    rel_ci_high_pct: float
    t_stat: float
    p_value: float
    nominal_level: float
    holm_level: float
    sd_rel: float
    decided_round: int | None
    interval_level: float

    @property
    def resolved(self) -> bool:
        """True once the effect is resolved (either way)."""
        return self.status != UNRESOLVED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class _Look:
    """One look at an effect: its round, seeds, estimate, standard error, t, reference mean, relative sd."""

    round: int
    n: int
    estimate: float
    se: float
    t: float
    ref: float
    sd_rel: float


@dataclass
class _Track:
    """An effect being followed: its contrast (config rows, weights), looks, status and rejection level."""

    spec: EffectSpec
    idx: np.ndarray
    w: np.ndarray
    ref_row: int
    looks: list[_Look] = field(default_factory=list)
    status: str = UNRESOLVED
    decided_round: int | None = None
    level: float = math.nan


@dataclass(frozen=True)
class SequentialPlan:
    """A sequential ablation: effects, family-wise alpha, equivalence margin `precision` (fraction of the
    reference mean), rounds of `seeds_per_round` seeds per configuration up to `max_seeds`, spending
    function. Seed r belongs to round r // seeds_per_round; nothing beyond a round's seeds is looked at."""

    effects: tuple[EffectSpec, ...]
    alpha: float = DEFAULT_ALPHA
    precision: float = DEFAULT_PRECISION
    max_seeds: int = DEFAULT_MAX_SEEDS
    seeds_per_round: int = DEFAULT_SEEDS_PER_ROUND
    spending: str = "obrien-fleming"

    def __post_init__(self) -> None:
        """Validate every argument (ValueError naming it)."""
        object.__setattr__(self, "effects", tuple(self.effects))
        _check_alpha(self.alpha)
        _check_positive(self.precision, "precision")
        _check_int(self.seeds_per_round, "seeds_per_round", 2)
        _check_int(self.max_seeds, "max_seeds", 2)
        if self.max_seeds < self.seeds_per_round:
            raise ValueError(f"max_seeds must be >= seeds_per_round ({self.seeds_per_round}), got {self.max_seeds}")
        _check_spending(self.spending)
        if not self.effects or not all(isinstance(e, EffectSpec) for e in self.effects):
            raise ValueError("effects must be a non-empty sequence of EffectSpec")
        if len({e.name for e in self.effects}) != len(self.effects):
            raise ValueError("effects must have distinct names")

    @property
    def n_rounds(self) -> int:
        """Planned rounds (the last may hold fewer seeds)."""
        return -(-self.max_seeds // self.seeds_per_round)

    @property
    def configs(self) -> tuple[str, ...]:
        """Every configuration of the design, in first-use order."""
        return tuple(dict.fromkeys(c for e in self.effects for c in e.configs))

    def seeds_through(self, round_index: int) -> int:
        """Seeds per configuration once round `round_index` (0-based) has run."""
        return min((round_index + 1) * self.seeds_per_round, self.max_seeds)

    def round_seeds(self, round_index: int) -> range:
        """The replicate keys `rep` that round `round_index` runs."""
        self._check_round(round_index)
        return range(round_index * self.seeds_per_round, self.seeds_through(round_index))

    def method(self) -> str:
        """One line naming the method, for report.md."""
        return METHOD.format(spending="O'Brien-Fleming" if self.spending == "obrien-fleming" else "Pocock",
                             m=len(self.effects), precision=self.precision)

    def _check_round(self, round_index: int) -> None:
        """ValueError unless 0 <= round_index < n_rounds."""
        if isinstance(round_index, bool) or not isinstance(round_index, (int, np.integer)) \
                or not 0 <= round_index < self.n_rounds:
            raise ValueError(f"round_index must be in 0..{self.n_rounds - 1}, got {round_index!r}")

    def decide(self, round_index: int, values: Mapping[str, Mapping[int, float] | Sequence[float]]
               ) -> list[EffectDecision]:
        """Decisions after round `round_index` from the per-configuration seed values (config -> {rep: value}
        or a sequence indexed by rep; NaN or absent = no value). The rounds are replayed from the data, so the
        result is deterministic and uses only seeds of rounds <= round_index."""
        self._check_round(round_index)
        tracker = _Tracker(self, _as_arrays(self, values))
        for r in range(round_index + 1):
            tracker.step(r)
        return tracker.decisions()

    def finished(self, decisions: Sequence[EffectDecision], round_index: int) -> bool:
        """True when every effect is resolved or round `round_index` was the last planned one."""
        return all(d.resolved for d in decisions) or round_index >= self.n_rounds - 1


def decide(plan: SequentialPlan, round_index: int, values: Mapping[str, Mapping[int, float] | Sequence[float]]
           ) -> list[EffectDecision]:
    """plan.decide(round_index, values): the decisions after that round (see SequentialPlan.decide)."""
    return plan.decide(round_index, values)


def configs_needed(decisions: Sequence[EffectDecision]) -> set[str]:
    """The configurations the next round must run: those of the still-unresolved effects."""
    return {c for d in decisions if not d.resolved for c in d.configs}


def unresolved(decisions: Sequence[EffectDecision]) -> list[str]:
    """Names of the effects still unresolved."""
    return [d.name for d in decisions if not d.resolved]


def _as_arrays(plan: SequentialPlan, values: Mapping[str, Mapping[int, float] | Sequence[float]]
               ) -> dict[str, np.ndarray]:
    """config -> float array [max_seeds] (NaN where no value); reps >= max_seeds are ignored."""
    out = {}
    for c in plan.configs:
        arr = np.full(plan.max_seeds, np.nan)
        v = values.get(c) if isinstance(values, Mapping) else None
        if v is None:
            pass
        elif isinstance(v, Mapping):
            for rep, x in v.items():
                if isinstance(rep, bool) or not isinstance(rep, (int, np.integer)) or rep < 0:
                    raise ValueError(f"values[{c!r}] keys must be seed indices (int >= 0), got {rep!r}")
                if rep < plan.max_seeds:
                    arr[int(rep)] = float(x)
        else:
            a = np.asarray(v, dtype=float).ravel()[: plan.max_seeds]
            arr[: a.size] = a
        out[c] = arr
    return out


class _Tracker:
    """The replayable state of a sequential design (looks per effect, statuses)."""

    def __init__(self, plan: SequentialPlan, arrays: dict[str, np.ndarray]) -> None:
        """Bind the plan to per-config arrays (filled in place by run_sequential)."""
        self.plan = plan
        self.names = list(plan.configs)
        self.arrays = arrays
        self.tracks = []
        for e in plan.effects:
            cfg = list(e.configs)
            wmap = dict(e.weights)
            self.tracks.append(_Track(e, np.array([self.names.index(c) for c in cfg]),
                                      np.array([wmap.get(c, 0.0) for c in cfg]), cfg.index(e.reference)))
        self.m = len(self.tracks)
        self.last_round = -1

    def _look(self, tr: _Track, cum: int, r: int) -> _Look | None:
        """The effect's statistics over seeds < cum present in all its configs (None if < 2 seeds)."""
        y = np.stack([self.arrays[self.names[i]][:cum] for i in tr.idx])
        ok = np.isfinite(y).all(axis=0)
        n = int(ok.sum())
        if n < 2:
            return None
        y = y[:, ok]
        d = tr.w @ y
        est = float(d.mean())
        sd = float(d.std(ddof=1))
        se = sd / math.sqrt(n)
        ref = float(y[tr.ref_row].mean())
        if se > 0:
            t = est / se
        else:
            t = 0.0 if est == 0 else math.copysign(math.inf, est)
        return _Look(r, n, est, se, t, ref, sd / abs(ref) if ref else math.nan)

    def _crosses(self, tr: _Track, level: float) -> bool:
        """True if some look so far crosses the boundary for `level`."""
        crit = _t_criticals(tuple(lk.n for lk in tr.looks), self.plan.max_seeds, level, self.plan.spending)
        return any(abs(lk.t) >= c for lk, c in zip(tr.looks, crit, strict=True))

    def step(self, r: int) -> None:
        """Take the look of round r (rounds must be stepped in order)."""
        if r != self.last_round + 1:
            raise ValueError(f"round_index must be {self.last_round + 1}, got {r}")
        self.last_round = r
        cum = self.plan.seeds_through(r)
        for tr in self.tracks:
            if tr.status != UNRESOLVED:
                continue
            lk = self._look(tr, cum, r)
            if lk is not None and (not tr.looks or lk.n > tr.looks[-1].n):
                tr.looks.append(lk)
        # Holm step-down (group-sequential): level alpha / m over the m hypotheses not rejected.
        while True:
            active = [tr for tr in self.tracks if tr.status != RESOLVED_EFFECT]
            if not active:
                break
            level = self.plan.alpha / len(active)
            hits = [tr for tr in active if tr.status == UNRESOLVED and tr.looks and self._crosses(tr, level)]
            if not hits:
                break
            for tr in hits:
                tr.status, tr.decided_round, tr.level = RESOLVED_EFFECT, r, level
        # Equivalence: the repeated confidence interval (alpha / n_effects) inside +-precision x reference.
        for tr in self.tracks:
            if tr.status != UNRESOLVED or not tr.looks or tr.looks[-1].round != r:
                continue
            lo, hi = self._interval(tr)
            margin = self.plan.precision * abs(tr.looks[-1].ref)
            if math.isfinite(lo) and math.isfinite(hi) and -margin < lo and hi < margin:
                tr.status, tr.decided_round = RESOLVED_NULL, r

    def _interval(self, tr: _Track, level: float | None = None) -> tuple[float, float]:
        """Repeated confidence interval at the last look (level alpha / n_effects unless given)."""
        lk = tr.looks[-1]
        crit = _t_criticals(tuple(x.n for x in tr.looks), self.plan.max_seeds,
                            self.plan.alpha / self.m if level is None else level, self.plan.spending)[-1]
        if lk.se == 0:
            return lk.estimate, lk.estimate
        return lk.estimate - crit * lk.se, lk.estimate + crit * lk.se

    def decisions(self) -> list[EffectDecision]:
        """One EffectDecision per effect, in the plan's order."""
        n_active = sum(tr.status != RESOLVED_EFFECT for tr in self.tracks)
        out = []
        for tr in self.tracks:
            level = tr.level if tr.status == RESOLVED_EFFECT else self.plan.alpha / max(n_active, 1)
            if not tr.looks:
                nan = math.nan
                out.append(EffectDecision(tr.spec.name, tr.spec.kind, tr.status, tr.spec.configs, 0, nan, nan, nan,
                                          nan, nan, nan, nan, nan, nan, nan, level, nan, tr.decided_round,
                                          self.plan.alpha / self.m))
                continue
            lk = tr.looks[-1]
            ci_level = tr.level if tr.status == RESOLVED_EFFECT else self.plan.alpha / self.m
            lo, hi = self._interval(tr, ci_level)
            p = float(2 * special.stdtr(lk.n - 1, -abs(lk.t))) if math.isfinite(lk.t) else 0.0
            nominal = nominal_levels([x.n for x in tr.looks], self.plan.max_seeds, level, self.plan.spending)[-1]
            pct = 100 / lk.ref if lk.ref else math.nan
            out.append(EffectDecision(tr.spec.name, tr.spec.kind, tr.status, tr.spec.configs, lk.n, lk.estimate,
                                      lk.ref, pct * lk.estimate, lo, hi, pct * lo, pct * hi, lk.t, p, nominal, level,
                                      lk.sd_rel, tr.decided_round, ci_level))
        return out


# ----------------------------------------------------------------------------------------------- driver loop


@dataclass(frozen=True)
class SequentialResult:
    """The outcome of run_sequential: final decisions, rounds run, seeds spent per configuration, why it
    stopped ("all resolved" or "max seeds"), and the data seen (config -> values by rep)."""

    plan: SequentialPlan
    decisions: tuple[EffectDecision, ...]
    rounds_run: int
    seeds_per_config: dict[str, int]
    stopped: str
    values: dict[str, np.ndarray]

    @property
    def unresolved(self) -> list[str]:
        """Effects still unresolved at the stop."""
        return unresolved(self.decisions)


Sampler = Callable[[int, Sequence[str], range], Mapping[str, Mapping[int, float]]]


def run_sequential(plan: SequentialPlan, sample: Sampler) -> SequentialResult:
    """Run the design: round r calls sample(r, configs, reps) for the configurations still needed and the
    round's replicate keys, which returns config -> {rep: value}; stops when every effect is resolved or
    at the last planned round. The final decisions equal plan.decide(last_round, result.values)."""
    arrays = {c: np.full(plan.max_seeds, np.nan) for c in plan.configs}
    tracker = _Tracker(plan, arrays)
    needed: list[str] = list(plan.configs)
    spent = dict.fromkeys(plan.configs, 0)
    decisions: list[EffectDecision] = []
    r = 0
    for r in range(plan.n_rounds):
        reps = plan.round_seeds(r)
        got = sample(r, tuple(needed), reps)
        for c in needed:
            spent[c] += len(reps)
            for rep, x in (got.get(c) or {}).items():
                if rep in reps:
                    arrays[c][rep] = float(x)
        tracker.step(r)
        decisions = tracker.decisions()
        if plan.finished(decisions, r):
            break
        need = configs_needed(decisions)
        needed = [c for c in plan.configs if c in need]
    stopped = "all resolved" if all(d.resolved for d in decisions) else "max seeds"
    return SequentialResult(plan, tuple(decisions), r + 1, spent, stopped, arrays)


# ----------------------------------------------------------------------------------------------- power


def power_at(effect: float, n_seeds: int, spread: float, *, alpha: float = DEFAULT_ALPHA, n_effects: int = 1,
             seeds_per_round: int | None = None, max_seeds: int | None = None,
             spending: str = "obrien-fleming") -> float:
    """Probability that an effect of relative size `effect` (fraction of the reference mean; sign ignored)
    is found with `n_seeds` paired seeds when the per-seed contrast has sd `spread` (same units).

    With seeds_per_round: the group-sequential test (looks every seeds_per_round seeds up to n_seeds, planned
    to max_seeds, default n_seeds) at level alpha / n_effects, normal approximation on the t-scale
    boundaries. Without: a fixed-sample paired t-test at alpha / n_effects (noncentral t). alpha / n_effects
    is Holm's first step, so this is a lower bound on the design's power."""
    _check_alpha(alpha)
    n = _check_int(n_seeds, "n_seeds", 2)
    sd = _check_positive(spread, "spread")
    m = _check_int(n_effects, "n_effects", 1)
    if not math.isfinite(effect):
        raise ValueError(f"effect must be finite, got {effect!r}")
    level = alpha / m
    delta = abs(float(effect)) / sd
    if seeds_per_round is None:
        crit = float(special.stdtrit(n - 1, 1 - level / 2))
        nc = delta * math.sqrt(n)
        p = 1 - special.nctdtr(n - 1, nc, crit) + special.nctdtr(n - 1, nc, -crit)
        if not math.isfinite(p):  # far in the tail: the normal approximation
            p = special.ndtr(nc - crit) + special.ndtr(-nc - crit)
        return float(min(max(p, 0.0), 1.0))
    k = _check_int(seeds_per_round, "seeds_per_round", 2)
    big_n = _check_int(max_seeds if max_seeds is not None else n, "max_seeds", n)
    looks = tuple(sorted({min(j, n) for j in range(k, n + k, k)}))
    crit = _t_criticals(looks, big_n, level, _check_spending(spending))
    drift = delta * math.sqrt(big_n)
    return float(min(crossing_probabilities(crit, [x / big_n for x in looks], drift).sum(), 1.0))


def power_statement(decision: EffectDecision, plan: SequentialPlan, effect: float = 0.05) -> str:
    """'an effect of 5% would have been found with probability 0.83 at these seeds' for one decision."""
    if decision.n_seeds < 2 or not (math.isfinite(decision.sd_rel) and decision.sd_rel > 0):
        return f"no power statement: {decision.n_seeds} seed(s) with a spread"
    p = power_at(effect, decision.n_seeds, decision.sd_rel, alpha=plan.alpha, n_effects=len(plan.effects),
                 seeds_per_round=plan.seeds_per_round, max_seeds=plan.max_seeds, spending=plan.spending)
    return (f"an effect of {100 * effect:g}% would have been found with probability {p:.2f} at these seeds "
            f"(spread {100 * decision.sd_rel:.1f}%)")


def reachable_margin(n_seeds: int, spread: float, plan: SequentialPlan) -> float:
    """The smallest equivalence margin (fraction of the reference) that an estimate of exactly zero could
    show at the final look with `n_seeds` seeds and paired spread `spread`: the half-width of the repeated
    confidence interval there. A margin below it cannot resolve a null effect by those seeds."""
    n = _check_int(n_seeds, "n_seeds", 2)
    sd = _check_positive(spread, "spread")
    looks = tuple(sorted({min(j, n) for j in range(plan.seeds_per_round, n + plan.seeds_per_round,
                                                    plan.seeds_per_round)}))
    crit = _t_criticals(looks, max(plan.max_seeds, n), plan.alpha / len(plan.effects), plan.spending)[-1]
    return float(crit * sd / math.sqrt(n))


# ----------------------------------------------------------------------------------------------- rliable


def iqm_and_probability_of_improvement(with_values: Sequence[float], without_values: Sequence[float],
                                       lower_is_better: bool = True) -> dict[str, float]:
    """rliable's interquartile mean of each side (rliable.metrics.aggregate_iqm over seeds, one task) and
    its probability of improvement P(with better than without) (rliable.metrics.probability_of_improvement,
    Mann-Whitney over seeds, unpaired). For an error metric (lower_is_better) the scores are negated, so
    0.5 = no tendency and 1 = every seed of `with` beats every seed of `without`."""
    from rliable import metrics

    x = np.asarray(with_values, dtype=float).ravel()
    y = np.asarray(without_values, dtype=float).ravel()
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        raise ValueError("with_values and without_values need at least one finite value each")
    sign = -1.0 if lower_is_better else 1.0
    return {"iqm_with": float(metrics.aggregate_iqm(x[:, None])),
            "iqm_without": float(metrics.aggregate_iqm(y[:, None])),
            "probability_of_improvement": float(metrics.probability_of_improvement(sign * x[:, None],
                                                                                   sign * y[:, None]))}


# ----------------------------------------------------------------------------------------------- report


def report_markdown(result: SequentialResult, power_effect: float = 0.05) -> str:
    """The sequential section of report.md: method, alpha, rounds, seeds per configuration, and per effect
    its status, seeds, effect in % of the reference with its interval, and the power statement."""
    plan = result.plan
    lines = ["## Sequential design", "",
             f"Method: {plan.method()}.", "",
             f"Family-wise alpha {plan.alpha:g}; equivalence margin +-{100 * plan.precision:g}% of the reference; "
             f"rounds of {plan.seeds_per_round} seeds, at most {plan.max_seeds} ({plan.n_rounds} rounds planned); "
             f"{result.rounds_run} round(s) run, stopped: {result.stopped}.", "",
             "Seeds per configuration: " + ", ".join(f"{c} {n}" for c, n in result.seeds_per_config.items()) + ".",
             "", "| effect | kind | status | seeds | effect % | interval % | power |", "|---|---|---|---|---|---|---|"]
    for d in result.decisions:
        lines.append(f"| {d.name} | {d.kind} | {d.status} | {d.n_seeds} | {d.rel_pct:+.2f} | "
                     f"[{d.rel_ci_low_pct:+.2f}, {d.rel_ci_high_pct:+.2f}] | "
                     f"{power_statement(d, plan, power_effect)} |")
    if result.unresolved:
        lines += ["", "Unresolved: " + ", ".join(result.unresolved) + "."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- simulation


def _holm_fixed(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm step-down rejections of p [experiments, m] at family-wise alpha."""
    e, m = p.shape
    order = np.argsort(p, axis=1, kind="stable")
    ps = np.take_along_axis(p, order, axis=1)
    ok = np.cumprod(ps <= alpha / (m - np.arange(m)), axis=1).astype(bool)
    out = np.zeros_like(ok)
    np.put_along_axis(out, order, ok, axis=1)
    return out


def _spread_range(spread: float | tuple[float, float]) -> tuple[float, float]:
    """(lo, hi) of the paired spread, validated."""
    if isinstance(spread, (int, float)) and not isinstance(spread, bool):
        s = _check_positive(spread, "spread")
        return s, s
    try:
        lo, hi = (float(v) for v in spread)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"spread must be a number > 0 or a (low, high) pair, got {spread!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"spread must be a number > 0 or a (low, high) pair, got {spread!r}")
    return lo, hi


def simulate_sequential(experiments: int = 500, alpha: float = DEFAULT_ALPHA,
                        effect_sizes: Sequence[float] = DEFAULT_EFFECT_SIZES,
                        spread: float | tuple[float, float] = DEFAULT_SPREAD,
                        seeds_per_round: int = DEFAULT_SEEDS_PER_ROUND, max_seeds: int = DEFAULT_MAX_SEEDS,
                        precision: float = DEFAULT_PRECISION, seed: int = 0, spending: str = "obrien-fleming",
                        reference_mse: float = DEFAULT_REFERENCE_MSE, seed_sd: float = 0.10,
                        global_null: bool = True, match_effect: float = 0.05) -> dict[str, Any]:
    """Monte Carlo of the sequential rule on simulated leave-one-out designs with known effects.

    Each experiment: a full configuration (mean reference_mse) and one full-without-i per effect size s
    (mean reference_mse * (1 + s), so the effect full - without is -s of the reference). Seed r adds a shared
    N(0, seed_sd * ref) to every configuration (paired noise) and an independent N(0, spread * ref / sqrt 2)
    per configuration, so the paired spread between seeds is `spread` (drawn uniformly per experiment when
    a (low, high) pair). Returns alpha, fwer (any rejection of a true-zero effect), power per nonzero size
    (rejection rate, keyed "0.05"), resolved_null / unresolved rates, mean_seeds per configuration,
    fixed_design_seeds (the fewest seeds per configuration at which a fixed design, paired t-tests with Holm
    at alpha on the same simulated seeds, reaches the sequential power at `match_effect`), Monte Carlo
    standard errors (*_se), and with global_null the fwer of the same design with every effect zero.
    Quantities that do not apply (fwer without a zero effect) are None, so the dict is strict JSON."""
    started = time.perf_counter()
    n_exp = _check_int(experiments, "experiments", 1)
    alpha = _check_alpha(alpha)
    sizes = [float(s) for s in effect_sizes]
    if not sizes or not all(math.isfinite(s) and s > -1 for s in sizes):
        raise ValueError(f"effect_sizes must be a non-empty list of finite numbers > -1, got {list(effect_sizes)!r}")
    lo_s, hi_s = _spread_range(spread)
    ref = _check_positive(reference_mse, "reference_mse")
    seed_sd = float(seed_sd) if seed_sd == 0 else _check_positive(seed_sd, "seed_sd")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    names = [f"e{j}" for j in range(len(sizes))]
    plan = SequentialPlan(tuple(loo_effects("full", {n: f"full -{n}" for n in names})), alpha=alpha,
                          precision=precision, max_seeds=max_seeds, seeds_per_round=seeds_per_round,
                          spending=spending)
    nonzero = sorted({s for s in sizes if s != 0})
    if match_effect not in nonzero:
        match_effect = min(nonzero, key=abs) if nonzero else 0.0

    def batch(effs: list[float], rng: np.random.Generator, horizon: int) -> dict[str, Any]:
        m = len(effs)
        mu = ref * np.array([1.0, *[1.0 + s for s in effs]])
        status = np.empty((n_exp, m), dtype=object)
        seeds_used = np.zeros((n_exp, m + 1))
        rounds = np.zeros(n_exp)
        ys = np.empty((n_exp, m + 1, horizon))
        for x in range(n_exp):
            sp = rng.uniform(lo_s, hi_s) if hi_s > lo_s else lo_s
            ys[x] = (mu[:, None] + seed_sd * ref * rng.standard_normal(horizon)[None, :]
                     + sp * ref / math.sqrt(2) * rng.standard_normal((m + 1, horizon)))
            y = ys[x]
            cfg = ["full", *[f"full -{n}" for n in names]]
            row = {c: i for i, c in enumerate(cfg)}

            def sample(r: int, configs: Sequence[str], reps: range, y: np.ndarray = y, row: dict = row
                       ) -> dict[str, dict[int, float]]:
                return {c: {rep: float(y[row[c], rep]) for rep in reps} for c in configs}

            res = run_sequential(plan, sample)
            status[x] = [d.status for d in res.decisions]
            seeds_used[x] = [res.seeds_per_config[c] for c in cfg]
            rounds[x] = res.rounds_run
        rejected = status == RESOLVED_EFFECT
        return {"rejected": rejected, "null": status == RESOLVED_NULL, "unres": status == UNRESOLVED,
                "seeds": seeds_used, "rounds": rounds, "y": ys}

    def se(p: float) -> float:
        return float(math.sqrt(max(p * (1 - p), 0.0) / n_exp))

    rng = np.random.default_rng(seed)
    horizon = 2 * plan.max_seeds
    main = batch(sizes, rng, horizon)
    zero = np.array([s == 0 for s in sizes])
    fwer = float(main["rejected"][:, zero].any(axis=1).mean()) if zero.any() else math.nan
    big = np.array([abs(s) > precision for s in sizes])
    false_eq = float(main["null"][:, big].any(axis=1).mean()) if big.any() else math.nan
    key = (lambda s: f"{s:g}")  # noqa: E731
    by_size = {s: np.array([v == s for v in sizes]) for s in sorted(set(sizes))}
    power = {key(s): float(main["rejected"][:, msk].mean()) for s, msk in by_size.items() if s != 0}
    per_config = main["seeds"].mean(axis=1)
    out: dict[str, Any] = {
        "method": plan.method(), "alpha": alpha, "precision": plan.precision, "spending": plan.spending,
        "seeds_per_round": plan.seeds_per_round, "max_seeds": plan.max_seeds, "rounds_planned": plan.n_rounds,
        "experiments": n_exp, "effect_sizes": sizes, "spread": [lo_s, hi_s], "reference_mse": ref,
        "design": f"loo, {len(sizes)} innovations, {len(sizes) + 1} configurations",
        "fwer": fwer, "fwer_se": se(fwer) if zero.any() else math.nan,
        "power": power, "power_se": {k: se(v) for k, v in power.items()},
        "resolved_null": {key(s): float(main["null"][:, msk].mean()) for s, msk in by_size.items()},
        "unresolved": {key(s): float(main["unres"][:, msk].mean()) for s, msk in by_size.items()},
        "false_equivalence": false_eq,
        "mean_seeds": float(per_config.mean()), "mean_seeds_se": float(per_config.std(ddof=1) / math.sqrt(n_exp))
        if n_exp > 1 else math.nan,
        "mean_seeds_by_config": {"full": float(main["seeds"][:, 0].mean()),
                                 **{f"full -{key(s)}": float(main["seeds"][:, 1 + j].mean())
                                    for j, s in enumerate(sizes)}},
        "mean_rounds": float(main["rounds"].mean()),
    }
    # The fixed design with the same power at match_effect, on the same simulated seeds.
    if match_effect != 0:
        target = float(main["rejected"][:, np.array([s == match_effect for s in sizes])].mean())
        y = main["y"]
        d = y[:, :1, :] - y[:, 1:, :]  # [E, m, horizon] full - without
        fixed_n, fixed_power = None, math.nan
        for n in range(2, horizon + 1):
            dn = d[:, :, :n]
            sd = dn.std(axis=2, ddof=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                t = dn.mean(axis=2) / (sd / math.sqrt(n))
            p = np.where(np.isfinite(t), 2 * special.stdtr(n - 1, -np.abs(np.nan_to_num(t))), 0.0)
            rej = _holm_fixed(p, alpha)
            pw = float(rej[:, np.array([s == match_effect for s in sizes])].mean())
            if pw >= target:
                fixed_n, fixed_power = n, pw
                break
        out.update(fixed_design_seeds=fixed_n, fixed_design_power=fixed_power, fixed_design_effect=match_effect,
                   sequential_power_at_match=target,
                   fixed_design_basis=(f"fewest seeds per configuration at which a fixed design (paired t-tests, "
                                       f"Holm at alpha, every configuration at n seeds) reaches the sequential "
                                       f"power at {key(match_effect)} on the same simulated seeds"
                                       + ("" if fixed_n is not None else f"; not reached by {horizon} seeds")))
    grid = np.linspace(lo_s, hi_s, 5) if hi_s > lo_s else np.array([lo_s])
    out["power_bonferroni_analytic"] = {
        key(s): float(np.mean([power_at(s, plan.max_seeds, float(g), alpha=alpha, n_effects=len(sizes),
                                        seeds_per_round=plan.seeds_per_round, max_seeds=plan.max_seeds,
                                        spending=plan.spending) for g in grid])) for s in nonzero}
    if global_null:
        null = batch([0.0] * len(sizes), np.random.default_rng([seed, 1]), plan.max_seeds)
        g = float(null["rejected"].any(axis=1).mean())
        out.update(fwer_global_null=g, fwer_global_null_se=se(g),
                   mean_seeds_global_null=float(null["seeds"].mean()))
    out["seconds"] = round(time.perf_counter() - started, 3)
    return _json_ready(out)


def _json_ready(value: Any) -> Any:
    """NaN/inf floats -> None, recursively (the result prints as strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
