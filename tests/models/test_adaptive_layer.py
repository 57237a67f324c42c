"""One adaptive conv bank with hand-made gradients: each knob does what MODELS.md says."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fsnet_models.adaptive import AdaptiveConvBank, AdaptiveSettings, sqrt_nonnegative
from fsnet_models.memory import (
    diversity_kernel,
    diversity_step,
    normalize_memory,
    read_and_write,
    slot_mean_squared_cosine,
)

G, C, K = 3, 8, 3  # layers, channels (square), kernel


def make_bank(seed: int = 0, in_ch: int = C, out_ch: int = C, **settings: object) -> AdaptiveConvBank:
    """A small bank of G square layers in eval mode, built from a fixed seed."""
    torch.manual_seed(seed)
    bank = AdaptiveConvBank(G, in_ch, out_ch, K, AdaptiveSettings(**settings))  # type: ignore[arg-type]
    bank.eval()
    return bank


def calibrated(bank: AdaptiveConvBank, memory_active: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The bank's calibrated (weight [G,out,in,k], bias [G,out], output scale [G,out]), all layers full."""
    params = bank.calibrate(memory_active)
    return tuple(torch.stack([getattr(p, n) for p in params]) for n in ("weight", "bias", "out_scale"))


def feed_gradient(bank: AdaptiveConvBank, grad: torch.Tensor, online: bool) -> None:
    """Pretend an optimiser step produced `grad` [G, out, in, k] for the conv weights."""
    bank.weight.grad = grad.clone()
    bank.update_gradient_state(online)


def fire_trigger(bank: AdaptiveConvBank) -> None:
    """Drive every layer's fast EMA against its slow EMA until the drift trigger fires."""
    g = torch.randn(bank.weight.shape, generator=torch.Generator().manual_seed(1))
    for _ in range(20):
        feed_gradient(bank, g, online=False)
    feed_gradient(bank, -g, online=True)
    feed_gradient(bank, -g, online=True)
    assert bool(bank.trigger.all())


def test_gradient_emas_follow_the_formulas() -> None:
    bank = make_bank()
    g = torch.randn(bank.weight.shape)
    feed_gradient(bank, g, online=False)
    normalized = F.normalize(g, dim=2).reshape(G, -1)
    assert torch.allclose(bank.e_fast, 0.7 * normalized)
    assert torch.allclose(bank.e_slow, 0.1 * normalized)
    assert not bank.trigger.any(), "the trigger is only armed online"


def test_trigger_fires_when_fast_opposes_slow_and_only_online() -> None:
    bank = make_bank()
    g = torch.randn(bank.weight.shape)
    for _ in range(20):
        feed_gradient(bank, g, online=False)
    feed_gradient(bank, -g, online=False)
    assert not bank.trigger.any()
    feed_gradient(bank, -g, online=True)
    assert bank.trigger.all()


def test_calibration_changes_only_on_trigger_and_memory_read_resets_it() -> None:
    bank = make_bank()
    fire_trigger(bank)
    memory_before = bank.memory.clone()
    w_fired, b_fired, f_fired = calibrated(bank, True)
    assert not bank.trigger.any(), "a read consumes the trigger"
    assert not torch.equal(bank.memory, memory_before), "a read writes the memory"
    # same state without the read: the calibration differs (the blend happened)
    twin = make_bank()
    fire_trigger(twin)
    w_raw, _, _ = calibrated(twin, False)
    assert not torch.allclose(w_fired, w_raw)
    assert twin.trigger.all(), "memory inactive: trigger stays armed"


@pytest.mark.parametrize("diversity", [0.0, 0.1])
def test_only_fired_layers_read_and_write_their_memory(diversity: float) -> None:
    bank, twin = make_bank(diversity_penalty=diversity), make_bank(diversity_penalty=diversity)
    for b in (bank, twin):
        fire_trigger(b)
        calibrated(b, False)  # starts the query EMA (the first query is q itself); the trigger stays armed
    bank.trigger.copy_(torch.tensor([True, False, True]))
    memory_before = bank.memory.clone()
    w_fired, _, _ = calibrated(bank, True)
    w_raw, _, _ = calibrated(twin, False)  # same state, no read
    s = bank.settings  # the read used the query EMA as updated by this calibration: bank.q_ema now
    alone = read_and_write(memory_before[[0, 2]], bank.q_ema[[0, 2]], torch.full((2,), s.temperature), s.top_k,
                           s.memory_heads, s.tau, False, diversity)
    assert torch.equal(bank.memory[1], memory_before[1]), "a layer that did not fire keeps its memory"
    assert torch.allclose(bank.memory[[0, 2]], alone.memory, atol=1e-6)
    assert torch.allclose(w_fired[1], w_raw[1], atol=1e-6) and not torch.allclose(w_fired[0], w_raw[0])
    assert bank.diagnostics()["reads"] == [1.0, 0.0, 1.0]


def test_no_graph_survives_a_step() -> None:
    bank = make_bank()
    fire_trigger(bank)
    weight, bias, scale = calibrated(bank, True)
    (weight.sum() + bias.sum() + scale.sum()).backward()
    for name in ("memory", "q_ema", "e_fast", "e_slow"):
        tensor = getattr(bank, name)
        assert tensor.grad_fn is None and not tensor.requires_grad, name


def test_chunk_by_out_aligns_chunks_with_output_channels() -> None:
    bank = make_bank(chunk_by="out")
    assert bank.n_chunks == C and bank.chunk_len == C * K
    base_weight, _, _ = calibrated(bank, False)
    grad = torch.zeros(bank.weight.shape)
    grad[:, 3] = torch.randn(G, C, K)  # only output channel 3 has a gradient
    feed_gradient(bank, grad, online=False)
    weight, _, _ = calibrated(bank, False)
    changed = (weight != base_weight).flatten(2).any(-1)  # [G, out]
    assert changed[:, 3].all() and not changed[:, [0, 1, 2, 4, 5, 6, 7]].any()


def test_chunk_by_in_scales_input_channels_per_reference() -> None:
    bank = make_bank()
    weight, _, _ = calibrated(bank, False)
    ratio = weight / bank.weight  # w[i, t], the same for every output channel
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)


def test_adaptive_tau_starts_equal_to_fixed_tau_and_is_trained() -> None:
    bank = make_bank(adaptive_tau=True)
    fire_trigger(bank)
    assert torch.allclose(bank._blend_tau(), torch.full((G,), 0.75))
    fixed = make_bank()
    fire_trigger(fixed)
    adaptive_out = calibrated(bank, True)
    fixed_out = calibrated(fixed, True)
    for a, f in zip(adaptive_out, fixed_out, strict=True):
        assert torch.allclose(a, f, atol=1e-6)
    adaptive_out[0].sum().backward()
    assert bank.tau_w.grad is not None and bank.tau_w.grad.abs().sum() > 0


def test_top_k_sets_the_number_of_written_slots() -> None:
    for k in (1, 2, 3):
        bank = make_bank(top_k=k)
        fire_trigger(bank)
        before = bank.memory.clone()
        calibrated(bank, True)
        # renormalisation rescales all slots uniformly; count slots changed beyond that scale
        scale = torch.linalg.matrix_norm(before).clamp_min(1)  # before is already normalised
        changed = ~torch.isclose(bank.memory * scale[:, None, None], before, atol=1e-7).all(1)
        assert (changed.sum(-1) <= k).all() and (changed.sum(-1) >= 1).all()
        if k > 1:
            assert (changed.sum(-1) == k).any()


def test_dynamic_temperature_stays_in_range_and_differs_from_fixed() -> None:
    bank = make_bank(dynamic_temperature=True)
    query = torch.randn(G, bank.calib_len)
    temperature = bank._temperature(query)
    assert ((temperature >= 0.3) & (temperature <= 0.7)).all()
    assert not torch.allclose(temperature, torch.full((G,), 0.5))
    assert torch.allclose(make_bank()._temperature(query), torch.full((G,), 0.5))


def test_controller_dropout_acts_in_training_only() -> None:
    bank = make_bank(controller_dropout=0.5)
    plain = make_bank()
    feed_gradient(bank, torch.randn(bank.weight.shape), online=False)
    plain.e_slow.copy_(bank.e_slow)
    assert torch.equal(calibrated(bank, False)[0], calibrated(plain, False)[0]), "eval mode: no dropout"
    bank.train()
    assert not torch.equal(calibrated(bank, False)[0], calibrated(plain, False)[0])


def single_head_reference(memory: torch.Tensor, query: torch.Tensor, t: float, k: int, tau: float):
    """MODELS.md section 2's read and write for one layer, written plainly."""
    att = torch.softmax(query @ memory / t, dim=-1)
    v, idx = att.topk(k)
    r = memory[:, idx] @ v
    new = memory.clone()
    for j in range(k):
        new[:, idx[j]] = tau * memory[:, idx[j]] + (1 - tau) * v[j] * r
    return r, new / max(float(torch.linalg.matrix_norm(new)), 1.0)


def test_memory_heads_one_equals_the_single_head_formula() -> None:
    torch.manual_seed(3)
    memory = torch.randn(G, 20, 32) * 0.05
    query = torch.randn(G, 20)
    read = read_and_write(memory, query, torch.full((G,), 0.5), 2, 1, 0.75, False, 0.0)
    for layer in range(G):
        r, new = single_head_reference(memory[layer], query[layer], 0.5, 2, 0.75)
        assert torch.allclose(read.retrieved[layer], r, atol=1e-6)
        assert torch.allclose(read.memory[layer], new, atol=1e-6)


def test_memory_heads_attend_separately_over_row_blocks() -> None:
    torch.manual_seed(4)
    memory = torch.randn(1, 21, 16) * 0.05  # 21 rows: heads of 6, 5, 5, 5 rows (tensor_split)
    query = torch.randn(1, 21)
    read = read_and_write(memory, query, torch.full((1,), 0.5), 2, 4, 0.75, False, 0.0)
    for rows in torch.arange(21).tensor_split(4):
        r, _ = single_head_reference(memory[0, rows], query[0, rows], 0.5, 2, 0.75)
        assert torch.allclose(read.retrieved[0, rows], r, atol=1e-6)


def test_equal_memory_heads_read_and_write_their_row_blocks() -> None:
    torch.manual_seed(7)
    memory = torch.randn(G, 20, 16) * 0.05  # 20 rows: 4 heads of 5 rows each
    query, temperature = torch.randn(G, 20), torch.tensor([0.3, 0.5, 0.7])
    read = read_and_write(memory, query, temperature, 3, 4, 0.75, False, 0.0)
    for layer in range(G):
        written, entropy = memory[layer].clone(), 0.0
        for rows in torch.arange(20).tensor_split(4):
            r, _ = single_head_reference(memory[layer, rows], query[layer, rows], float(temperature[layer]), 3, 0.75)
            assert torch.allclose(read.retrieved[layer, rows], r, atol=1e-6)
            att = torch.softmax(query[layer, rows] @ memory[layer, rows] / temperature[layer], dim=-1)
            v, idx = att.topk(3)
            for j in range(3):
                written[rows, idx[j]] = 0.75 * memory[layer, rows][:, idx[j]] + 0.25 * v[j] * r
            entropy += float(-(att * att.log()).sum()) / 4
        expected = written / max(float(torch.linalg.matrix_norm(written)), 1.0)
        assert torch.allclose(read.memory[layer], expected, atol=1e-6)
        assert read.entropy[layer].item() == pytest.approx(entropy, rel=1e-5)


def test_index_weighted_read_is_the_reference_bug() -> None:
    torch.manual_seed(5)
    memory, query = torch.randn(1, 10, 8) * 0.1, torch.randn(1, 10)
    fixed = read_and_write(memory, query, torch.full((1,), 0.5), 2, 1, 0.75, False, 0.0)
    bug = read_and_write(memory, query, torch.full((1,), 0.5), 2, 1, 0.75, True, 0.0)
    idx = (query[0] @ memory[0]).topk(2).indices
    assert torch.allclose(bug.retrieved[0], memory[0][:, idx] @ idx.float(), atol=1e-6)
    assert not torch.allclose(fixed.retrieved, bug.retrieved)


def test_gated_controller_follows_the_gate_formula() -> None:
    bank = make_bank(gated_controller=True)
    feed_gradient(bank, torch.randn(bank.weight.shape), online=False)
    chunks = bank.e_slow.view(G, bank.n_chunks, bank.chunk_len)
    h1 = F.silu(chunks @ bank.ctrl_w1 + bank.ctrl_b1)
    h2 = F.silu(h1 @ bank.ctrl_w2 + bank.ctrl_b2)
    gate = torch.sigmoid(h1 @ bank.gate_w + bank.gate_b)
    assert torch.allclose(bank._controller(), gate * h2 + (1 - gate) * h1, atol=1e-6)


def test_memory_slots_sets_the_memory_width() -> None:
    assert make_bank(memory_slots=64).memory.shape == (G, make_bank().calib_len, 64)


def test_grad_second_moment_feeds_mean_and_spread() -> None:
    bank = make_bank(grad_second_moment=True)
    assert bank.ctrl_w1.shape[1] == 2 * bank.chunk_len
    g1, g2 = torch.randn(bank.weight.shape), torch.randn(bank.weight.shape)
    feed_gradient(bank, g1, online=False)
    feed_gradient(bank, g2, online=False)
    n1, n2 = (F.normalize(g, dim=2).reshape(G, -1) for g in (g1, g2))
    expected_square = 0.9 * 0.1 * n1**2 + 0.1 * n2**2
    assert torch.allclose(bank.e_square, expected_square, atol=1e-7)
    spread = (bank.e_square - bank.e_slow**2).clamp_min(0).sqrt()
    assert spread.abs().sum() > 0
    inputs = torch.cat([bank.e_slow.view(G, bank.n_chunks, -1), spread.view(G, bank.n_chunks, -1)], dim=-1)
    assert torch.allclose(bank._controller(), F.silu(inputs @ bank.ctrl_w1 + bank.ctrl_b1), atol=1e-6)


def test_sqrt_nonnegative_is_sqrt_and_keeps_zeros_exact() -> None:
    torch.manual_seed(8)
    values = torch.cat([torch.zeros(100), torch.rand(1000) * 10, torch.rand(100) * 1e-30])
    root = sqrt_nonnegative(values)
    assert torch.equal(root[:100], torch.zeros(100))
    assert torch.allclose(root, values.double().sqrt().float(), rtol=3e-7, atol=0)


def test_adaptive_trigger_fires_on_an_unusual_drop_the_fixed_one_ignores() -> None:
    adaptive, fixed = make_bank(adaptive_trigger=True), make_bank()
    for bank in (adaptive, fixed):
        bank.e_fast.fill_(1.0)
        bank.e_slow.fill_(1.0)
    torch.manual_seed(6)
    for _ in range(200):  # cosines around 0.95
        for bank in (adaptive, fixed):
            bank._trigger_threshold(0.95 + 0.01 * torch.randn(G))
    threshold = adaptive._trigger_threshold(torch.zeros(G))
    assert (threshold > -0.75).all() and (threshold <= 0).all()
    assert (torch.zeros(G) - 0.01 < threshold).all(), "a cosine of -0.01 falls below the adaptive threshold"
    assert torch.equal(fixed._trigger_threshold(torch.zeros(G)), torch.full((G,), -0.75))


def test_diversity_penalty_lowers_the_slots_mean_squared_cosine() -> None:
    torch.manual_seed(7)
    shared = torch.randn(1, 40, 1)
    memory = 0.05 * (shared + 0.3 * torch.randn(1, 40, 16))  # correlated slots
    query = torch.randn(1, 40)
    plain = read_and_write(memory, query, torch.full((1,), 0.5), 2, 1, 0.75, False, 0.0)
    diverse = read_and_write(memory, query, torch.full((1,), 0.5), 2, 1, 0.75, False, 0.1)
    assert slot_mean_squared_cosine(diverse.memory) < slot_mean_squared_cosine(plain.memory)
    assert float(torch.linalg.matrix_norm(diverse.memory)) <= 1 + 1e-6


@pytest.mark.parametrize("slots", [2, 5, 32])
def test_diversity_kernel_gives_autograds_gradient(slots: int) -> None:
    torch.manual_seed(slots)
    memory = torch.randn(3, 40, slots, dtype=torch.float64)
    memory[1] *= 1e-3  # short slots: the normalisation's gradient matters more
    memory[2, :, 0] = 0.0  # a zero slot: below the 1e-8 clamp
    leaf = memory.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(slot_mean_squared_cosine(leaf).sum(), leaf)
    assert torch.allclose(memory @ diversity_kernel(memory), expected, rtol=1e-10, atol=1e-12)
    step = diversity_step(memory, 0.1)
    assert torch.allclose(step, normalize_memory(memory - 0.1 * expected), rtol=1e-10, atol=1e-12)


def test_slot_mean_squared_cosine_matches_pairwise_definition() -> None:
    memory = torch.randn(1, 6, 5)
    unit = memory[0] / memory[0].norm(dim=0)
    pairs = [float(unit[:, i] @ unit[:, j]) ** 2 for i in range(5) for j in range(5) if i != j]
    assert math.isclose(float(slot_mean_squared_cosine(memory)), sum(pairs) / len(pairs), rel_tol=1e-5)


@pytest.mark.parametrize("in_ch,out_ch", [(8, 40), (40, 40)])
def test_non_square_layers_calibrate(in_ch: int, out_ch: int) -> None:
    bank = make_bank(in_ch=in_ch, out_ch=out_ch)
    fire_trigger(bank)
    weight, bias, scale = calibrated(bank, True)
    assert weight.shape == (G, out_ch, in_ch, K) and bias.shape == (G, out_ch) and scale.shape == (G, out_ch)
