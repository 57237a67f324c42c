"""docs/knobs.md, generated from the knob registry (fsnet_models.knobs) and the presets.

    python -m fsnet_models.knobs_doc > docs/knobs.md     # or: python -m fsnet_models.knobs_doc --write

The page is never edited by hand: `tests/models/test_knobs_doc.py` fails when docs/knobs.md differs
from `knobs_markdown()`. It has three tables: the innovations (which knobs each one switches and to
what), the presets (which innovations each one turns on, and which knob scopes apply to it), and
every knob (the rows of `knob_table()`, the same data `--list-knobs` prints).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsnet_models.knobs import (
    INNOVATIONS,
    KNOBS,
    SCOPE_ADAPTIVE,
    SCOPE_ALL,
    SCOPE_MEMORY,
    SCOPE_NEURAL,
    SCOPE_REPLAY,
    Innovation,
    knob_table,
)
from fsnet_models.presets import PRESETS, Preset

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "knobs.md"
REGENERATE = "python -m fsnet_models.knobs_doc --write"
_SCOPES = (SCOPE_ALL, SCOPE_NEURAL, SCOPE_REPLAY, SCOPE_ADAPTIVE, SCOPE_MEMORY)
_TIERS = ("advanced", "ultra")


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: backslashes, pipes, asterisks and `<` escaped."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("<", "&lt;")


def _text(value: Any) -> str:
    """A knob value as it is written on the command line (`--set name=value`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _value(value: Any) -> str:
    """A knob value in backticks."""
    return f"`{_text(value)}`"


def _row(cells: Sequence[str]) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table as lines: header, separator, rows."""
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _allowed(name: str) -> str:
    """The knob's allowed values; free-text knobs (a str without choices) accept any text."""
    spec = KNOBS[name]
    if spec.type is str and spec.choices is None:
        return "any text"
    return spec.allowed()


def _innovation_on(inn: Innovation, preset: Preset) -> bool | None:
    """True/False when `inn` is on/off in `preset`; None when its knobs do not apply to the preset."""
    if any(KNOBS[k].scope not in preset.scopes for k in inn.knobs):
        return None
    return all(KNOBS[k].value_for(preset.name) == v for k, v in inn.on_values().items())


def _innovations_section() -> list[str]:
    """The innovations: id, registry name, tier, and the knob values that switch each one on and off."""
    rows = []
    tiers = {t: [i.id for i in INNOVATIONS.values() if i.tier == t] for t in _TIERS}
    several = [f"{i.id} (`{'`, `'.join(i.knobs)}`)" for i in INNOVATIONS.values() if len(i.knobs) > 1]
    for inn in INNOVATIONS.values():
        on = ", ".join(f"`{k}={_text(v)}`" for k, v in inn.on_values().items())
        off = ", ".join(f"`{k}={_text(v)}`" for k, v in inn.off_values().items())
        rows.append([inn.id, f"`{inn.name}`", inn.tier, _cell(inn.description), on, off])
    return [
        "## Innovations",
        "",
        f"The {len(INNOVATIONS)} innovations of the technical report: {len(tiers['advanced'])} in `advanced` "
        f"({', '.join(tiers['advanced'])}), {len(tiers['ultra'])} more in `ultra` ({', '.join(tiers['ultra'])}).",
        "An innovation is on when all its knobs take its tier preset's values, and off at the `fsnet` defaults.",
        "The ablation designs switch these units (`--unit innovation`, the default); `--unit knob` switches",
        "single knobs instead"
        + (f" (innovations with more than one knob: {'; '.join(several)})." if several else "."),
        "",
        *_table(["id", "name", "tier", "what it is", "on", "off"], rows),
        "",
    ]


def _presets_section() -> list[str]:
    """The presets: what each is, the knob scopes that apply to it, and which innovations it turns on."""
    rows = []
    for p in PRESETS.values():
        states = {inn.id: _innovation_on(inn, p) for inn in INNOVATIONS.values()}
        on = [i for i, s in states.items() if s]
        if on:
            turned_on = ", ".join(on)
        elif any(s is False for s in states.values()):
            turned_on = "none"
        else:
            turned_on = "n/a (no adaptive layers)"
        scopes = ", ".join(s for s in _SCOPES if s in p.scopes)
        rows.append([f"`{p.name}`", _cell(p.description), scopes, turned_on])
    return [
        "## Presets",
        "",
        "`--preset NAME` (one trial) or a space's base and full preset (ablations). A knob whose scope",
        "does not apply to a preset is refused for it. Every knob not listed under an innovation keeps its",
        "default in every preset.",
        "",
        *_table(["preset", "what it is", "scopes that apply", "innovations on"], rows),
        "",
    ]


def _knobs_section() -> list[str]:
    """Every knob of the registry: type, default, allowed values, preset values, innovation, scope."""
    rows = []
    for r in knob_table():
        spec = KNOBS[r["knob"]]
        rows.append([
            f"`{spec.name}`", r["type"], _value(spec.default), _cell(_allowed(spec.name)),
            _value(spec.value_for("advanced")), _value(spec.value_for("ultra")), r["innovation"],
            r["applies to"], _cell(r["description"]),
        ])
    scope_rows = [[f"`{s}`", ", ".join(f"`{p.name}`" for p in PRESETS.values() if s in p.scopes)] for s in _SCOPES]
    return [
        "## Knobs",
        "",
        "Set any of them with `--set name=value` (booleans: true/false). The default is the `fsnet` value;",
        "the `advanced` and `ultra` columns are those presets' values. Innovation: the report's id, or",
        "`hyperparameter` / `protocol`. A value outside the allowed range, or a knob outside the preset's",
        "scope, is refused before any trial starts. Two combinations are refused as well:",
        "`memory_slots` < `top_k`, and `t_min` > `t_max`.",
        "",
        *_table(["knob", "type", "default", "allowed", "advanced", "ultra", "innovation", "applies to",
                 "description"], rows),
        "",
        "Scopes (the `applies to` column) and the presets they cover:",
        "",
        *_table(["scope", "presets"], scope_rows),
        "",
    ]


def knobs_markdown() -> str:
    """The whole text of docs/knobs.md, built from KNOBS, INNOVATIONS and PRESETS (ends with one newline)."""
    lines = [
        "# Knobs",
        "",
        "<!-- Generated from fsnet_models/knobs.py and fsnet_models/presets.py; do not edit by hand.",
        f"     Regenerate with: {REGENERATE} -->",
        "",
        "Every setting a trial, a search space or a result row can name is a knob of one registry,",
        "`fsnet_models/knobs.py`. The command line (`--set`), the search spaces, the results schema",
        "(`knob_<name>` and `innov_<name>` columns of trials.parquet) and this page all read it.",
        "`python -m harness.trial --list-knobs` prints the same table as text;",
        "`python -m harness.trial --list-presets` lists the presets.",
        "",
        *_innovations_section(),
        *_presets_section(),
        *_knobs_section(),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print docs/knobs.md to stdout, or write it in place with --write."""
    parser = argparse.ArgumentParser(prog="python -m fsnet_models.knobs_doc", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {DOC_PATH.parent.name}/{DOC_PATH.name} "
                        "instead of printing it")
    args = parser.parse_args(argv)
    text = knobs_markdown()
    if args.write:
        DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOC_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {DOC_PATH}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
