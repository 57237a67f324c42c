"""The `revin` and `online_lr` knobs: RevIN without affine (fsnet_models.revin) and the online phase's rate.

RevIN off is the reference forward, bit for bit. RevIN on makes the forecast equivariant to a
per-column affine map of the data columns: x_j -> s_j * x_j + c_j gives, on each target column
k, out_k -> s_k * out_k + c_k. The eps inside the square root (1e-5) makes that exact for the
shift only; for the scale it holds up to O(eps / var), so the scale checks use windows of
variance ~1e6 (eps / var ~ 1e-11), where float64 can test it to 1e-10.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fsnet_models import KnobError, build_from_config, build_model, parse_knob_value, resolve_config
from fsnet_models.factory import io_sizes
from fsnet_models.group import build_group
from fsnet_models.knobs import KNOBS, validate_knob
from fsnet_models.model import ForecastNet
from fsnet_models.revin import revin_denormalise, revin_normalise
from harness.online.protocol import set_online_learning_rate

pytestmark = pytest.mark.usefixtures("one_thread")

CALENDAR = 7
SEQ_LEN, PRED_LEN = 48, 12


def window(batch: int, n_in: int, seed: int = 0, spread: float = 1.0) -> torch.Tensor:
    """Float64 inputs [batch, 48, n_in + 7]; data columns with std ~ `spread` and a non-zero mean."""
    g = torch.Generator().manual_seed(seed)
    data = 3.0 + spread * torch.randn(batch, SEQ_LEN, n_in, generator=g, dtype=torch.float64)
    calendar = torch.randn(batch, SEQ_LEN, CALENDAR, generator=g, dtype=torch.float64)
    return torch.cat([data, calendar], dim=-1)


def forecast(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One eval-mode step's forecast (begin_step once: the calibrations do not depend on x)."""
    model.eval()
    model.begin_step()
    with torch.no_grad():
        return model(x)


# ---------------------------------------------------------------------- the pure functions
def test_normalise_gives_zero_mean_unit_variance_and_leaves_the_calendar_alone() -> None:
    x = window(3, 7, spread=5.0)
    x_norm, mean, std = revin_normalise(x, 7)
    assert x_norm.shape == x.shape and mean.shape == std.shape == (3, 7)
    data = x_norm[..., :7]
    assert torch.allclose(data.mean(dim=1), torch.zeros(3, 7, dtype=torch.float64), atol=1e-12)
    var = x[..., :7].var(dim=1, unbiased=False)
    assert torch.allclose(data.var(dim=1, unbiased=False), var / (var + 1e-5), atol=1e-12)
    assert torch.equal(x_norm[..., 7:], x[..., 7:])


def test_denormalise_inverts_per_target_time_major_and_over_leading_dims() -> None:
    x = window(4, 7, spread=2.0).view(2, 2, SEQ_LEN, 14)  # leading [G, B]
    _, mean, std = revin_normalise(x, 7)  # [2, 2, 7]
    target = [6]  # MS
    out = torch.randn(2, 2, PRED_LEN * 1, dtype=torch.float64)
    back = revin_denormalise(out, mean, std, target, 1)
    assert torch.allclose(back, out * std[..., 6:7] + mean[..., 6:7], rtol=0, atol=1e-12)
    out = torch.randn(2, 2, PRED_LEN * 7, dtype=torch.float64)  # M: index t * 7 + c
    back = revin_denormalise(out, mean, std, list(range(7)), 7).view(2, 2, PRED_LEN, 7)
    want = out.view(2, 2, PRED_LEN, 7) * std[..., None, :] + mean[..., None, :]
    assert torch.allclose(back, want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="target"):
        revin_denormalise(out, mean, std, [0], 7)


# ---------------------------------------------------------------------- ForecastNet
@pytest.mark.parametrize("preset", ["ogd", "fsnet", "ultra"])
def test_revin_off_is_bit_identical_to_the_default(preset: str) -> None:
    default = build_model(preset, seed=3)
    explicit = build_model(preset, seed=3, revin=False)
    assert isinstance(default, ForecastNet) and not default.revin and not explicit.revin
    assert resolve_config(preset)["revin"] is False
    x = window(5, 1).float()
    assert torch.equal(forecast(default, x), forecast(explicit, x))


@pytest.mark.parametrize("features", ["S", "M", "MS"])
@pytest.mark.parametrize("preset", ["ogd", "fsnet"])
def test_revin_on_is_equivariant_to_an_affine_map_of_each_data_column(preset: str, features: str) -> None:
    n_in, n_out, target = io_sizes(features)
    model = build_model(preset, seed=1, features=features, revin=True).double()
    x = window(4, n_in, seed=2, spread=1e3)
    g = torch.Generator().manual_seed(5)
    scale = 0.5 + 2.0 * torch.rand(n_in, generator=g, dtype=torch.float64)  # s_j > 0, one per column
    shift = 100.0 * torch.randn(n_in, generator=g, dtype=torch.float64)
    moved = x.clone()
    moved[..., :n_in] = x[..., :n_in] * scale + shift
    both = forecast(model, torch.cat([x, moved]))  # one batch: rows are independent in eval mode
    out, out_moved = both[:4].view(4, PRED_LEN, n_out), both[4:].view(4, PRED_LEN, n_out)
    want = out * scale[target] + shift[target]
    size = want.abs().max()
    assert torch.allclose(out_moved, want, rtol=1e-10, atol=1e-10 * float(size))
    # a pure shift is exact up to rounding whatever the variance
    small = window(4, n_in, seed=7)
    shifted = small.clone()
    shifted[..., :n_in] += shift
    both = forecast(model, torch.cat([small, shifted]))
    want = both[:4].view(4, PRED_LEN, n_out) + shift[target]
    assert torch.allclose(both[4:].view(4, PRED_LEN, n_out), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("preset", ["ogd", "fsnet"])
def test_revin_on_changes_the_forecast(preset: str) -> None:
    off = build_model(preset, seed=1).double()
    on = build_model(preset, seed=1, revin=True).double()
    assert all(torch.equal(a, b) for a, b in zip(off.state_dict().values(), on.state_dict().values(), strict=True))
    assert [n for n, _ in off.named_parameters()] == [n for n, _ in on.named_parameters()]  # no parameters added
    x = window(3, 1, spread=4.0)
    assert (forecast(off, x) - forecast(on, x)).abs().max() > 1e-3


def test_the_gradient_flows_through_the_statistics() -> None:
    """Directional derivatives of L = out.sum() along the two maps RevIN is equivariant to:
    shifting every data column by c shifts every forecast by c (d/dc = out.numel(), exact), and
    scaling them by s scales the forecast (d/ds at s = 1 is L, up to eps / var ~ 1e-11 here).
    A detached mean breaks the first, a detached std the second."""
    model = build_model("ogd", seed=0, features="MS", revin=True).double().eval()
    x = window(2, 7, spread=1e3).requires_grad_(True)
    model.begin_step()
    out = model(x)
    out.sum().backward()
    assert x.grad is not None
    grad = x.grad[..., :7]
    assert abs(float(grad.sum()) - out.numel()) < 1e-9
    along_scale = float((grad * x.detach()[..., :7]).sum())
    total = out.detach()
    assert abs(along_scale - float(total.sum())) < 1e-8 * float(total.abs().sum())


# ---------------------------------------------------------------------- GroupNet
@pytest.mark.parametrize("features", ["S", "MS"])
@pytest.mark.parametrize("preset", ["ogd", "fsnet"])
def test_group_member_with_revin_equals_its_solo_model(preset: str, features: str) -> None:
    seeds = [0, 1, 2]
    n_in, _, _ = io_sizes(features)
    config = resolve_config(preset, {"revin": True, "features": features})
    group = build_group(config, seeds).double()
    x = torch.stack([window(3, n_in, seed=10 + i, spread=3.0 + i) for i in range(len(seeds))])  # [G, B, T, F]
    got = forecast(group, x)  # [G, B, P]
    off = build_group(resolve_config(preset, {"features": features}), seeds).double()
    assert (got - forecast(off, x)).abs().max() > 1e-3  # revin is on in the group
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        solo = build_from_config(config).double()
        assert isinstance(solo, ForecastNet) and solo.revin
        assert torch.allclose(got[i], forecast(solo, x[i]), rtol=1e-9, atol=1e-10), i


# ---------------------------------------------------------------------- online_lr and the knob rules
def test_set_online_learning_rate_sets_every_group_or_leaves_the_rate() -> None:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr": 2e-3}], lr=5e-4)
    set_online_learning_rate(optimizer, resolve_config("ogd"))  # online_lr None: the reference
    assert [g["lr"] for g in optimizer.param_groups] == [5e-4, 2e-3]
    set_online_learning_rate(optimizer, {"preset": "persistence"})  # knob absent: nothing
    assert [g["lr"] for g in optimizer.param_groups] == [5e-4, 2e-3]
    set_online_learning_rate(optimizer, resolve_config("ogd", {"online_lr": 1e-5}))
    assert [g["lr"] for g in optimizer.param_groups] == [1e-5, 1e-5]


def test_set_online_learning_rate_on_a_group_optimizer() -> None:
    from fsnet_models.group_optim import GroupAdamW

    config = resolve_config("advanced", {"online_lr": 3e-5})  # adaptive_tau: a masked group too
    group = build_group(config, [0, 1])
    optimizer = GroupAdamW(group, lr=1e-3)
    assert len(optimizer.param_groups) == 2  # the inner AdamW's and the masked one's (tau)
    set_online_learning_rate(optimizer, config)
    assert [g["lr"] for g in optimizer.param_groups] == [3e-5, 3e-5]
    assert optimizer.inner.param_groups[0]["lr"] == 3e-5 and optimizer.masked_group["lr"] == 3e-5


def test_online_lr_parses_validates_and_defaults_to_none() -> None:
    assert KNOBS["online_lr"].default is None and KNOBS["online_lr"].type is float
    assert parse_knob_value("online_lr", "1e-5") == 1e-5
    assert parse_knob_value("online_lr", "none") is None and validate_knob("online_lr", None) is None
    assert validate_knob("online_lr", 1) == 1.0
    assert resolve_config("ultra")["online_lr"] is None
    for bad in ("0", "-1e-4", "1.5", "fast"):
        with pytest.raises(KnobError, match=r"^knob 'online_lr' got .*: expected a number > 0 and <= 1, or none"):
            parse_knob_value("online_lr", bad)
    with pytest.raises(KnobError, match="online_lr"):
        resolve_config("fsnet", {"online_lr": 0.0})
    with pytest.raises(KnobError, match="lr"):  # None is for knobs that say what it means
        validate_knob("lr", None)
    with pytest.raises(KnobError, match="revin"):
        validate_knob("revin", None)


@pytest.mark.parametrize("name,value", [("revin", True), ("online_lr", 1e-4)])
def test_both_knobs_apply_to_every_trained_preset_and_not_to_persistence(name: str, value: Any) -> None:
    for preset in ("ogd", "er", "derpp", "nomem", "fsnet_bug", "fsnet", "advanced", "ultra"):
        assert resolve_config(preset, {name: value})[name] == value
    with pytest.raises(KnobError, match=f"^knob '{name}' does not apply to preset 'persistence'"):
        resolve_config("persistence", {name: value})
    assert name not in resolve_config("persistence")
    assert parse_knob_value("revin", "on") is True


def test_the_results_schema_types_online_lr_as_float64_and_keeps_none_null(tmp_path: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.experiment.results import TRIAL_SCHEMA, ResultsStore, build_trial_row

    assert TRIAL_SCHEMA.field("knob_online_lr").type == pa.float64()
    assert TRIAL_SCHEMA.field("knob_revin").type == pa.bool_()
    experiment = {"name": "e", "space": None, "design": None, "unit": None}
    store = ResultsStore(tmp_path)
    for i, overrides in enumerate(({}, {"online_lr": 2e-4, "revin": True})):
        knobs = resolve_config("ogd", overrides)
        store.upsert(build_trial_row(experiment, f"t{i}", "ogd", "ogd", 0, knobs, {}, {}, "TERMINATED", None))
    table = pq.read_table(tmp_path / "trials.parquet")
    assert table.column("knob_online_lr").to_pylist() == [None, 2e-4]
    assert table.column("knob_revin").to_pylist() == [False, True]
