"""The driver's Ray Tune callback: write each trial's row and curve as it finishes, print a progress line."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from ray import tune

from fsnet_models.knobs import KnobError
from harness.experiment.console import progress_line
from harness.experiment.designs import innovation_states
from harness.experiment.files import git_commit, package_versions
from harness.experiment.results import ResultsStore, build_curve_rows, build_trial_row
from harness.experiment.spec import TrialSpec

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def one_line_error(text: str | None) -> str:
    """The most telling single line of a Ray error trace (the last `XxxError: ...` line)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Failure #")]
    picked = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), None)
    picked = picked or (lines[0] if lines else "trial failed")
    return picked[:500]


def _provenance_now() -> dict[str, Any]:
    """The checkout's git commit and the installed package versions (a JSON string), now."""
    return {"git_commit": git_commit(), "package_versions": json.dumps(package_versions())}


class ResultsCallback(tune.Callback):
    """on_trial_complete / on_trial_error: upsert the trial into the experiment's ResultsStore.

    The store lives on disk: the callback keeps no state across pickling (Tuner.restore
    unpickles it from the experiment state) and reloads the files when first needed. The git commit and
    package versions are taken when the driver starts (construction or restore): the code the trials run,
    even when the checkout moves on while they do.
    """

    def __init__(self, folder: str | Path, experiment: dict[str, Any], total: int | None,
                 out: TextIO | None = None) -> None:
        self.folder = str(folder)
        self.experiment = experiment
        self.total = total
        self.out = out
        self._store: ResultsStore | None = None
        self.provenance: dict[str, Any] = _provenance_now()  # git commit and package versions of the run's code

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only (no rows, no stream)."""
        return {"folder": self.folder, "experiment": self.experiment, "total": self.total}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the settings; rows are reloaded from disk when needed."""
        self.__dict__.update(state, out=None, _store=None, provenance=_provenance_now())

    @property
    def store(self) -> ResultsStore:
        """The experiment's ResultsStore (loaded from disk on first use)."""
        if self._store is None:
            self._store = ResultsStore(self.folder)
        return self._store

    def _say(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)

    def _record(self, trial: Any, status: str) -> None:
        result = dict(trial.last_result or {})
        spec = TrialSpec.from_tune_config(trial.config)
        if spec.is_group and not result.get("skipped"):
            self._record_group(trial, spec, result, status)
            return
        if result.get("skipped"):
            seeds = f"seeds {','.join(map(str, spec.seeds))}" if spec.is_group else f"seed {spec.seed}"
            self._say(f"[{len(self.store.trials)}/{self.total or '?'}] {spec.variant} {seeds}: "
                      "finished in an earlier run; kept")
            return
        try:
            knobs = spec.knobs()
        except KnobError:
            knobs = {}
        error = None
        if status == "ERROR":
            error = one_line_error(_read_error(trial))
            result = {"steps": result.get("step"), "trial_seconds": result.get("trial_seconds"),
                      "started_at": result.get("started_at"), "node_ip": trial.node_ip}
        elif not result.get("final"):  # stopped early by the scheduler: running metrics only
            result = {"steps": result.get("step"), "mse": result.get("cum_mse"), "mae": result.get("cum_mae"),
                      "trial_seconds": result.get("trial_seconds"), "started_at": result.get("started_at"),
                      "node_ip": trial.node_ip}
        result.setdefault("ended_at", datetime.now(timezone.utc).isoformat())
        innovations = innovation_states(knobs, self.experiment.get("plain", False))
        row = build_trial_row({**self.experiment, **self.provenance}, trial.trial_id, spec.variant, spec.preset,
                              spec.seed, knobs, innovations, result, status, error)
        curve = json.loads(result.get("curve_json") or "[]")
        self.store.upsert(row, build_curve_rows(self.experiment["name"], trial.trial_id, spec.variant, spec.seed,
                                                curve))
        self._say(progress_line(row, len(self.store.trials), self.total))

    def _record_group(self, trial: Any, spec: TrialSpec, result: dict[str, Any], status: str) -> None:
        """A group's rows: one per member (trial id `<group trial id>_m<index>`), each with its curve.

        A member whose stream diverged, or every member of a group that failed as a whole, is an ERROR row.
        """
        members = json.loads(result.get("members_json") or "[]") if status != "ERROR" else []
        group_error = one_line_error(_read_error(trial)) if status == "ERROR" else None
        if not members:  # the group failed (or was stopped) before reporting its members
            members = [{"seed": seed, "member_index": i, "error": group_error or "the group ended without results"}
                       for i, seed in enumerate(spec.seeds)]
        common = {k: result.get(k) for k in ("trial_seconds", "started_at", "ended_at", "node_ip")}
        common.setdefault("node_ip", trial.node_ip)
        entries = []
        for member in members:
            index = int(member["member_index"])
            member_spec = spec.member(index)
            try:
                knobs = member_spec.knobs()
            except KnobError:
                knobs = {}
            member_result = {**common, **{k: v for k, v in member.items() if k not in ("curve_json",)},
                             "group_id": trial.trial_id, "group_size": len(spec.seeds), "member_index": index}
            member_result["ended_at"] = member_result.get("ended_at") or datetime.now(timezone.utc).isoformat()
            error = member.get("error")
            row = build_trial_row({**self.experiment, **self.provenance}, f"{trial.trial_id}_m{index}",
                                  spec.variant, spec.preset, member_spec.seed, knobs,
                                  innovation_states(knobs, self.experiment.get("plain", False)), member_result,
                                  "ERROR" if error else "TERMINATED", error)
            curve = json.loads(member.get("curve_json") or "[]")
            entries.append((row, build_curve_rows(self.experiment["name"], row["trial_id"], spec.variant,
                                                  member_spec.seed, curve)))
        self.store.upsert_many(entries)
        for row, _ in entries:
            self._say(progress_line(row, len(self.store.trials), self.total))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial ended normally (or was stopped by the scheduler): record it as TERMINATED."""
        self._record(trial, "TERMINATED")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial failed and will be retried from its last checkpoint: say so in one line."""
        spec = TrialSpec.from_tune_config(trial.config)
        step = (trial.last_result or {}).get("step", 0)
        seeds = f"seeds {','.join(map(str, spec.seeds))}" if spec.is_group else f"seed {spec.seed}"
        self._say(f"[retry] {spec.variant} {seeds}: {one_line_error(_read_error(trial))}; resuming from its"
                  f" last checkpoint (last report at step {step})")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial failed for good (retries exhausted): record it as ERROR."""
        self._record(trial, "ERROR")


def _read_error(trial: Any) -> str | None:
    """The text of a trial's error file (through its storage, else the local copy), if readable."""
    try:
        text = trial.get_error()
        if text:
            return str(text)
    except Exception:  # noqa: BLE001 - storage hiccups must not stop the experiment
        pass
    path = getattr(trial, "error_file", None)
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace") if path else None
    except OSError:
        return None
