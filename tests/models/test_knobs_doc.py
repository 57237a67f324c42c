"""docs/knobs.md is generated from the knob registry and must not go stale."""

from __future__ import annotations

import pytest

from fsnet_models.knobs import INNOVATIONS, KNOBS
from fsnet_models.knobs_doc import DOC_PATH, REGENERATE, knobs_markdown, main
from fsnet_models.presets import PRESETS


def test_docs_knobs_md_matches_the_registry() -> None:
    """The committed page equals knobs_markdown(); the failure message says how to regenerate it."""
    assert DOC_PATH.is_file(), f"{DOC_PATH} is missing; regenerate it with: {REGENERATE}"
    committed = DOC_PATH.read_text(encoding="utf-8")
    assert committed == knobs_markdown(), (
        f"{DOC_PATH} is stale: it differs from the knob registry; regenerate it with: {REGENERATE}"
    )


def test_knobs_markdown_names_every_knob_innovation_and_preset() -> None:
    """Each knob, innovation and preset has its own row, and the text ends with exactly one newline."""
    text = knobs_markdown()
    rows = text.splitlines()
    for name in KNOBS:
        assert sum(r.startswith(f"| `{name}` |") for r in rows) == 1, name
    for inn in INNOVATIONS.values():
        assert sum(r.startswith(f"| {inn.id} | `{inn.name}` |") for r in rows) == 1, inn.id
    for name in PRESETS:
        assert sum(r.startswith(f"| `{name}` |") for r in rows) >= 1, name
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_main_prints_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m fsnet_models.knobs_doc` without --write prints exactly knobs_markdown()."""
    assert main([]) == 0
    assert capsys.readouterr().out == knobs_markdown()
