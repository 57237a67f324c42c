"""The model family: exact pruning, the factory, presets and knob validation."""

from __future__ import annotations

import pytest
import torch

from fsnet_models import INNOVATIONS, KNOBS, KnobError, build_model, parse_knob_value, resolve_config
from fsnet_models.presets import PRESETS, applicable_knobs

INNOVATION_KNOBS = [k for i in INNOVATIONS.values() for k in i.knobs]


@pytest.mark.parametrize("preset", ["ogd", "fsnet", "ultra"])
def test_pruned_network_equals_full_network_with_gradients(preset: str) -> None:
    torch.manual_seed(0)
    full = build_model(preset, fast=False)
    torch.manual_seed(0)
    pruned = build_model(preset, fast=True)
    x = torch.randn(4, 48, 8)
    # one step of the full network gives non-zero gradient EMAs (the calibrations then differ
    # between layers); the pruned network takes over the full one's state in its own layout
    full.begin_step()
    full(x).square().sum().backward()
    full.end_step()
    pruned.load_state_dict(pruned.state_from_all_taps(full.state_dict()))
    full.zero_grad(set_to_none=True)
    outs = []
    for model in (full, pruned):
        model.eval()
        model.begin_step()
        out = model(x)
        out.square().sum().backward()
        outs.append(out)
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    full_params = dict(full.named_parameters())
    nonzero_kept = {name: 0 for name in full_params}
    for name, p_pruned in pruned.named_parameters():
        p_full = full_params[pruned.all_taps_name(name)]
        if p_full.grad is None:  # e.g. the blend's tau before any memory read
            assert p_pruned.grad is None, name
            continue
        expected = pruned.to_own_layout(name, p_full.grad)
        assert torch.allclose(expected, p_pruned.grad, atol=1e-5, rtol=1e-4), name
        nonzero_kept[pruned.all_taps_name(name)] += int(torch.count_nonzero(expected))
    for name, p_full in full_params.items():  # what the pruned layout drops has exactly zero gradient
        if p_full.grad is not None:
            assert nonzero_kept[name] == int(torch.count_nonzero(p_full.grad)), name
    convs = full.encoder.convs if preset == "ogd" else None
    if convs is not None:  # outer taps of the dilation >= 48 blocks get exactly zero gradient
        assert torch.count_nonzero(convs[-1].weight.grad[:, :, [0, 2]]) == 0


@pytest.mark.parametrize("seq_len", [36, 61, 96])
def test_needed_positions_path_is_exact_for_other_window_lengths(seq_len: int) -> None:
    """Full-length blocks run on the positions the last one depends on; odd lengths included."""
    for preset in ("ogd", "fsnet"):
        models = []
        for fast in (False, True):
            torch.manual_seed(1)
            models.append(build_model(preset, fast=fast, seq_len=seq_len))
        x = torch.randn(3, seq_len, 8)
        outs = []
        for model in models:
            model.eval()
            model.begin_step()
            outs.append(model(x))
            outs[-1].square().sum().backward()
        full, fast = models
        assert torch.allclose(outs[0], outs[1], atol=1e-5), (preset, seq_len)
        full_params = dict(full.named_parameters())
        for name, param in fast.named_parameters():
            expected = fast.to_own_layout(name, full_params[fast.all_taps_name(name)].grad)
            assert torch.allclose(param.grad, expected, atol=1e-5, rtol=1e-4), (preset, seq_len, name)


def test_last_position_layers_keep_only_the_centre_tap() -> None:
    model = build_model("fsnet")
    shapes = [(bank.count, bank.centre_only, tuple(bank.weight.shape)) for bank in model.adaptive.banks]
    assert shapes == [(12, False, (12, 64, 64, 3)), (8, True, (8, 64, 64, 1)),
                      (1, True, (1, 320, 64, 1)), (1, True, (1, 320, 320, 1))]
    assert [bank.count for bank in build_model("fsnet", fast=False).adaptive.banks] == [20, 1, 1]
    assert [bank.count for bank in build_model("fsnet", seq_len=96).adaptive.banks] == [14, 6, 1, 1]
    plain = [conv.kernel_size[0] for conv in build_model("ogd").encoder.convs]
    assert plain == [3] * 12 + [1] * 10
    assert [conv.kernel_size[0] for conv in build_model("ogd", fast=False).encoder.convs] == [3] * 22


def test_every_preset_builds_and_forecasts() -> None:
    x = torch.randn(2, 48, 8)
    for name in PRESETS:
        model = build_model(name)
        model.begin_step()
        assert model(x).shape == (2, 12), name


def test_persistence_repeats_the_last_value() -> None:
    x = torch.randn(2, 48, 8)
    out = build_model("persistence")(x)
    assert torch.equal(out, x[:, -1, :1].repeat(1, 12))
    assert not list(build_model("persistence").parameters())


def test_presets_set_their_innovations() -> None:
    adv, ultra, fsnet = resolve_config("advanced"), resolve_config("ultra"), resolve_config("fsnet")
    assert adv["chunk_by"] == "out" and adv["top_k"] == 3 and adv["dynamic_temperature"] and adv["adaptive_tau"]
    assert adv["memory_heads"] == 1 and not adv["gated_controller"]
    assert ultra["memory_heads"] == 4 and ultra["memory_slots"] == 64 and ultra["diversity_penalty"] == 0.1
    for name in INNOVATION_KNOBS:
        assert fsnet[name] == KNOBS[name].default


def test_ultra_with_every_innovation_off_is_fsnet_bit_for_bit() -> None:
    defaults = {k: KNOBS[k].default for k in INNOVATION_KNOBS}
    plain, reduced = build_model("fsnet"), build_model("ultra", **defaults)
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in reduced.named_parameters()]
    x = torch.randn(1, 48, 8)
    for model in (plain, reduced):
        model.eval()
        model.set_online(True)
    for _ in range(3):
        outs = []
        for model in (plain, reduced):
            model.begin_step()
            out = model(x)
            out.sum().backward()
            model.end_step()
            outs.append(out)
        assert torch.equal(outs[0], outs[1])


def test_unknown_knob_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(KnobError) as err:
        resolve_config("fsnet", {"memory_head": 2})
    assert "memory_head" in str(err.value) and "memory_heads" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name,text,allowed", [
    ("memory_heads", "0", ">= 1"),
    ("memory_heads", "two", "integer"),
    ("controller_dropout", "0.9", "< 0.9"),
    ("chunk_by", "rows", "'in', 'out'"),
    ("adaptive_tau", "maybe", "true or false"),
    ("tau", "1", "< 1"),
    ("lr", "nan", "number"),
])
def test_bad_values_are_refused_with_the_allowed_values(name: str, text: str, allowed: str) -> None:
    with pytest.raises(KnobError) as err:
        parse_knob_value(name, text)
    message = str(err.value)
    assert name in message and allowed in message and "\n" not in message


def test_wrong_python_type_is_refused() -> None:
    with pytest.raises(KnobError, match="top_k"):
        resolve_config("advanced", {"top_k": 2.5})
    with pytest.raises(KnobError, match="adaptive_tau"):
        resolve_config("advanced", {"adaptive_tau": 1})


def test_cross_knob_rules_and_scopes() -> None:
    with pytest.raises(KnobError, match="memory_slots"):
        resolve_config("ultra", {"memory_slots": 2, "top_k": 3})
    with pytest.raises(KnobError, match="does not apply"):
        resolve_config("ogd", {"memory_heads": 2})
    with pytest.raises(KnobError, match="does not apply"):
        resolve_config("nomem", {"top_k": 3})
    assert "replay_size" in applicable_knobs("er") and "replay_size" not in applicable_knobs("fsnet")


def test_knob_values_parse_to_their_types() -> None:
    assert parse_knob_value("memory_heads", "2") == 2
    assert parse_knob_value("diversity_penalty", "0") == 0.0
    assert parse_knob_value("gated_controller", "off") is False
    assert parse_knob_value("chunk_by", "out") == "out"
