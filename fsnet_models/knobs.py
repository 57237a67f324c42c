"""The single knob registry: every setting a trial, a search space or a result row can name.

Each knob has a name, a type, a default (the `fsnet` value), an allowed range or choices, the
values the `advanced` and `ultra` presets give it, a one-line description, and the innovation of
the technical report it belongs to (Advanced 1-4, Ultra 1-6), or "hyperparameter"/"protocol".
A knob with `none_means` also takes None (`--set name=none`), its default where that is the
reference (online_lr: None = the learning rate warm-up leaves).
The CLI (`--set`), the search spaces, the results schema and the docs all read this table;
nothing lists the knobs a second time by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class KnobError(ValueError):
    """A knob name, type or value was refused; str() is one line naming the knob and what it allows."""


# Which models a knob is meaningful for. A knob set on a preset outside its scope is refused.
SCOPE_ALL = "all"  # every preset, persistence included
SCOPE_NEURAL = "neural"  # every trained model
SCOPE_REPLAY = "replay"  # er, derpp
SCOPE_ADAPTIVE = "adaptive"  # nomem, fsnet_bug, fsnet, advanced, ultra (controller and gradient EMAs)
SCOPE_MEMORY = "memory"  # fsnet_bug, fsnet, advanced, ultra (trigger and associative memory)


@dataclass(frozen=True)
class Knob:
    """One setting: its type, default (the `fsnet` value), allowed values and preset values."""

    name: str
    type: type
    default: Any
    description: str
    innovation: str = "hyperparameter"
    scope: str = SCOPE_ALL
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    preset_values: Mapping[str, Any] = field(default_factory=dict)
    none_means: str | None = None  # set: None is a value too (written `none`), meaning this

    def allowed(self) -> str:
        """A short human-readable statement of the values this knob accepts."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.type is bool:
            text = "true or false"
        else:
            parts = []
            if self.low is not None:
                parts.append(f"{'>=' if self.low_inclusive else '>'} {self.low:g}")
            if self.high is not None:
                parts.append(f"{'<=' if self.high_inclusive else '<'} {self.high:g}")
            kind = "an integer" if self.type is int else "a number"
            text = kind + (" " + " and ".join(parts) if parts else "")
        return text if self.none_means is None else f"{text}, or none ({self.none_means})"

    def value_for(self, preset: str) -> Any:
        """The value this knob takes in `preset` (its default where the preset leaves it alone)."""
        return self.preset_values.get(preset, self.default)


@dataclass(frozen=True)
class Innovation:
    """One idea of the technical report; it is on when all its knobs take their preset values."""

    id: str
    name: str
    tier: str  # "advanced" or "ultra"
    knobs: tuple[str, ...]
    description: str

    def on_values(self) -> dict[str, Any]:
        """Knob values that switch this innovation on (its tier preset's values)."""
        return {k: KNOBS[k].value_for(self.tier) for k in self.knobs}

    def off_values(self) -> dict[str, Any]:
        """Knob values that switch this innovation off (the `fsnet` defaults)."""
        return {k: KNOBS[k].default for k in self.knobs}


def _innovation_knob(name: str, type_: type, default: Any, on: Any, tier: str, innovation: str,
                     description: str, scope: str = SCOPE_MEMORY, **limits: Any) -> Knob:
    values = {"advanced": on, "ultra": on} if tier == "advanced" else {"ultra": on}
    return Knob(name, type_, default, description, innovation, scope, preset_values=values, **limits)


_KNOB_LIST: tuple[Knob, ...] = (
    # ---- FSNet-Advanced (report section 3, MODELS.md section 4)
    _innovation_knob("chunk_by", str, "in", "out", "advanced", "A1",
                     "controller chunks: 'in' = reference rows of the flat gradient, 'out' = one per output"
                     " channel", scope=SCOPE_ADAPTIVE, choices=("in", "out")),
    _innovation_knob("adaptive_tau", bool, False, True, "advanced", "A2",
                     "blend coefficient tau = sigmoid(Linear(per-chunk cos(e_f, e_s))), starts at tau"),
    _innovation_knob("top_k", int, 2, 3, "advanced", "A3", "memory slots read and written per trigger",
                     low=1),
    _innovation_knob("dynamic_temperature", bool, False, True, "advanced", "A3",
                     "attention temperature T = t_min + (t_max - t_min) * sigmoid(Linear(query))"),
    _innovation_knob("controller_dropout", float, 0.0, 0.1, "advanced", "A4",
                     "dropout after the controller activation (acts in warm-up only: online runs in eval"
                     " mode)", scope=SCOPE_ADAPTIVE, low=0.0, high=0.9, high_inclusive=False),
    # ---- FSNet-Ultra (report section 7, MODELS.md section 5)
    _innovation_knob("memory_heads", int, 1, 4, "ultra", "U1",
                     "memory attention heads over contiguous parts of the query and memory rows", low=1),
    _innovation_knob("gated_controller", bool, False, True, "ultra", "U2",
                     "two-layer controller with a GRU-style gate", scope=SCOPE_ADAPTIVE),
    _innovation_knob("memory_slots", int, 32, 64, "ultra", "U3", "number of associative memory slots",
                     low=1),
    _innovation_knob("grad_second_moment", bool, False, True, "ultra", "U4",
                     "controller also sees the gradient spread sqrt(max(E[g^2] - e_s^2, 0))",
                     scope=SCOPE_ADAPTIVE),
    _innovation_knob("adaptive_trigger", bool, False, True, "ultra", "U5",
                     "fire when cos(e_f, e_s) < EMA mean - kappa * EMA std (clamped to [-1, 0])"),
    _innovation_knob("diversity_penalty", float, 0.0, 0.1, "ultra", "U6",
                     "step size of a gradient step on the slots' mean squared cosine after each write",
                     low=0.0),
    # ---- hyperparameters of the models (MODELS.md section 6)
    Knob("lr", float, 1e-3, "AdamW learning rate at the start of warm-up", scope=SCOPE_NEURAL,
         low=0.0, high=1.0, low_inclusive=False),
    Knob("weight_decay", float, 0.01, "AdamW decoupled weight decay", scope=SCOPE_NEURAL, low=0.0),
    Knob("online_lr", float, None, "learning rate of the online phase only (set at the end of warm-up)",
         scope=SCOPE_NEURAL, low=0.0, high=1.0, low_inclusive=False,
         none_means="the reference: the rate warm-up leaves, lr * 0.5**(E-1) when all E >= 1 epochs run"),
    Knob("revin", bool, False, "RevIN without its affine: each window's data columns minus their mean over"
         " time, over sqrt(var + 1e-5); the forecast mapped back with its target column's (no parameters)",
         scope=SCOPE_NEURAL),
    Knob("tau", float, 0.75, "blend coefficient of memory retrieval and write", scope=SCOPE_MEMORY,
         low=0.0, high=1.0, low_inclusive=False, high_inclusive=False),
    Knob("gamma", float, 0.9, "slow gradient EMA decay (and of the second moment)", scope=SCOPE_ADAPTIVE,
         low=0.0, high=1.0, high_inclusive=False),
    Knob("f_gamma", float, 0.3, "fast gradient EMA decay (and of the memory query EMA)",
         scope=SCOPE_ADAPTIVE, low=0.0, high=1.0, high_inclusive=False),
    Knob("trigger_threshold", float, 0.75, "fixed trigger: fire when cos(e_f, e_s) < -threshold",
         scope=SCOPE_MEMORY, low=0.0, high=1.0),
    Knob("temperature", float, 0.5, "fixed attention temperature", scope=SCOPE_MEMORY, low=0.0,
         low_inclusive=False),
    Knob("t_min", float, 0.3, "dynamic temperature lower bound", scope=SCOPE_MEMORY, low=0.0,
         low_inclusive=False),
    Knob("t_max", float, 0.7, "dynamic temperature upper bound", scope=SCOPE_MEMORY, low=0.0,
         low_inclusive=False),
    Knob("trigger_beta", float, 0.99, "adaptive trigger: EMA decay of the cosine's mean and variance",
         scope=SCOPE_MEMORY, low=0.0, high=1.0, high_inclusive=False),
    Knob("trigger_kappa", float, 2.0, "adaptive trigger: standard deviations below the mean", scope=SCOPE_MEMORY,
         low=0.0),
    Knob("controller_hidden", int, 64, "controller hidden width", scope=SCOPE_ADAPTIVE, low=1),
    Knob("replay_size", int, 500, "reservoir buffer size (er, derpp)", scope=SCOPE_REPLAY, low=1),
    Knob("replay_batch", int, 8, "replayed samples per online step (er, derpp)", scope=SCOPE_REPLAY, low=1),
    Knob("replay_weight", float, 0.2, "weight of each replay loss term (er, derpp)", scope=SCOPE_REPLAY,
         low=0.0),
    # ---- the protocol (MODELS.md section 7)
    Knob("dataset", str, "ETTh1", "ETT-format dataset name (file <dataset>.csv)", "protocol"),
    Knob("features", str, "S", "S: target only; M: all columns to all; MS: all columns to the target",
         "protocol", choices=("S", "M", "MS")),
    Knob("target", str, "OT", "target column", "protocol"),
    Knob("seq_len", int, 48, "input window length (hours)", "protocol", low=1),
    Knob("pred_len", int, 12, "forecast horizon (hours)", "protocol", low=1),
    Knob("epochs", int, 2, "warm-up epochs on the training split", "protocol", scope=SCOPE_NEURAL, low=0),
    Knob("batch_size", int, 32, "warm-up mini-batch size", "protocol", scope=SCOPE_NEURAL, low=1),
    Knob("patience", int, 3, "warm-up early-stopping patience (epochs)", "protocol", scope=SCOPE_NEURAL,
         low=1),
    Knob("feedback_delay", int, 0, "0: learn window t right after predicting it (reference); pred_len:"
         " learn only from fully observed truth (honest)", "protocol", low=0),
    Knob("online_split", str, "test", "the stream the online phase runs over: test (the reference), or val, the"
         " validation windows (to tune hyperparameters such as online_lr without seeing the test stream)",
         "protocol", choices=("test", "val")),
    Knob("seed", int, 0, "random seed of initialisation, shuffling and replay", "protocol", low=0),
)

KNOBS: dict[str, Knob] = {k.name: k for k in _KNOB_LIST}

INNOVATIONS: dict[str, Innovation] = {
    i.name: i
    for i in (
        Innovation("A1", "chunk_by", "advanced", ("chunk_by",), "structure-aligned controller chunks"),
        Innovation("A2", "adaptive_tau", "advanced", ("adaptive_tau",), "learned blend coefficient"),
        Innovation("A3", "topk_temperature", "advanced", ("top_k", "dynamic_temperature"),
                   "top-3 retrieval with a dynamic temperature"),
        Innovation("A4", "controller_dropout", "advanced", ("controller_dropout",), "controller dropout"),
        Innovation("U1", "memory_heads", "ultra", ("memory_heads",), "multi-head memory attention"),
        Innovation("U2", "gated_controller", "ultra", ("gated_controller",), "gated residual controller"),
        Innovation("U3", "memory_slots", "ultra", ("memory_slots",), "larger memory"),
        Innovation("U4", "grad_second_moment", "ultra", ("grad_second_moment",),
                   "gradient second-moment tracking"),
        Innovation("U5", "adaptive_trigger", "ultra", ("adaptive_trigger",), "adaptive trigger threshold"),
        Innovation("U6", "diversity_penalty", "ultra", ("diversity_penalty",), "memory diversity penalty"),
    )
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "null"}


def knob(name: str) -> Knob:
    """The registry entry for `name`; an unknown name raises KnobError listing the known knobs."""
    try:
        return KNOBS[name]
    except KeyError:
        raise KnobError(f"unknown knob '{name}'; known knobs: {', '.join(KNOBS)}") from None


def parse_knob_value(name: str, text: str) -> Any:
    """Convert the command-line text of a `--set name=text` into the knob's type, then validate it."""
    spec = knob(name)
    raw = text.strip()
    if spec.none_means is not None and raw.lower() in _NONE:
        return None
    try:
        if spec.type is bool:
            low = raw.lower()
            if low not in _TRUE | _FALSE:
                raise ValueError
            value: Any = low in _TRUE
        elif spec.type is int:
            value = int(raw)
        elif spec.type is float:
            value = float(raw)
        else:
            value = raw
    except ValueError:
        raise KnobError(f"knob '{name}' got {text!r}: expected {spec.allowed()}") from None
    return validate_knob(name, value)


def validate_knob(name: str, value: Any) -> Any:
    """Check `value` against the knob's type and range; return it (ints accepted for floats).

    None is accepted only by a knob with `none_means` (e.g. online_lr: None = the reference).
    """
    spec = knob(name)
    if value is None and spec.none_means is not None:
        return None
    bad = KnobError(f"knob '{name}' got {value!r}: expected {spec.allowed()}")
    if spec.type is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if spec.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise bad
    elif spec.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        value = float(value)
    elif not isinstance(value, str):
        raise bad
    if spec.choices is not None and value not in spec.choices:
        raise bad
    if spec.low is not None and (value < spec.low or (value == spec.low and not spec.low_inclusive)):
        raise bad
    if spec.high is not None and (value > spec.high or (value == spec.high and not spec.high_inclusive)):
        raise bad
    return value


def knob_table() -> list[dict[str, str]]:
    """The registry as rows of strings (name, type, default, allowed, advanced, ultra, innovation, description)."""
    rows = []
    for k in KNOBS.values():
        rows.append({
            "knob": k.name,
            "type": k.type.__name__,
            "default": repr(k.default),
            "allowed": k.allowed(),
            "advanced": repr(k.value_for("advanced")),
            "ultra": repr(k.value_for("ultra")),
            "innovation": k.innovation,
            "applies to": k.scope,
            "description": k.description,
        })
    return rows


def format_knob_table() -> str:
    """The registry as a fixed-width text table for `--list-knobs`."""
    rows = knob_table()
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols[:-1]}
    lines = ["  ".join(c.ljust(widths[c]) if c in widths else c for c in cols)]
    for r in rows:
        lines.append("  ".join(r[c].ljust(widths[c]) if c in widths else r[c] for c in cols))
    return "\n".join(lines)
