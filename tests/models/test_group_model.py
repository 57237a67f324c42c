"""Trial groups (fsnet_models.group): G members as one network compute what G solo models compute.

Grouped against solo, step by step, in float64: a few warm-up steps (train mode, batch 4, the
members' own dropout draws) and then >= 50 online steps (eval mode, memory on, batch 1), for
every preset, with AdamW on both sides (fused, as the trial runner builds it). Each member gets
its own data; the targets flip sign with a period of its own, and the memory presets lower the
trigger threshold (a knob of the one shared configuration) so that triggers fire often and on
different steps for different members; the tests assert that they did.

Tolerances (float64): forecasts to 1e-9 relative (observed <= 4e-13); parameters to 1e-7
relative (observed <= 7e-9 after 54 steps, small weights that AdamW moves by lr). The gradient
statistics (EMAs, query EMA, memory) are compared more loosely (1e-5): their input is the
gradient normalised over input channels with eps 1e-12, and some rows of the conv gradients are
~1e-13 (sums that cancel), so their rounding, which differs between the batched products and
F.conv1d, is magnified up to ~1e-7 there. The triggers (a threshold on those EMAs) must agree
exactly, every step.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fsnet_models import build_from_config, resolve_config
from fsnet_models.group import GroupNet, build_group, member_mask, member_part
from fsnet_models.group_optim import GroupAdamW
from fsnet_models.member_ops import member_dropout
from fsnet_models.model import ForecastNet

PRESETS = ["ogd", "nomem", "fsnet_bug", "fsnet", "advanced", "ultra"]
MEMORY_PRESETS = ["fsnet_bug", "fsnet", "advanced", "ultra"]
SEEDS = [0, 1, 2]
PERIODS = [5, 7, 11]  # member i's target flips sign every PERIODS[i] steps
WARM_UP_STEPS, ONLINE_STEPS = 4, 50
OUT_TOL = {"rtol": 1e-9, "atol": 1e-10}
PARAM_TOL = {"rtol": 1e-7, "atol": 1e-9}
STAT_TOL = {"rtol": 1e-5, "atol": 1e-5}
GRADIENT_STATISTICS = ("e_fast", "e_slow", "e_square", "q_ema", "memory", "cos_stats", "diag_sums", "diag_range")


pytestmark = pytest.mark.usefixtures("one_thread")


def config_for(preset: str) -> dict[str, Any]:
    """The preset's config; memory presets fire at cos(e_f, e_s) < 0 (the fixed threshold; ultra's
    adaptive trigger uses it on its first online step)."""
    return resolve_config(preset, {"trigger_threshold": 0.0} if preset in MEMORY_PRESETS else {})


def solo_models(config: dict[str, Any], seeds: list[int]) -> tuple[list[ForecastNet], list[torch.Tensor]]:
    """The solo models as the trial runner builds them, and torch's RNG state right after each build."""
    models, states = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_from_config(config))
        states.append(torch.get_rng_state())
    return models, states


def solo_triggers(model: ForecastNet) -> torch.Tensor:
    """Armed triggers of a solo model per layer: bool [22]."""
    assert model.adaptive is not None
    return torch.stack([model.adaptive.banks[b].trigger[i] for b, i in model.adaptive.location])


def step_data(step: int, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [G, B, 48, 8] and targets [G, B, 12], float64, each member its own."""
    x = torch.randn(len(SEEDS), batch, 48, 8, generator=generator, dtype=torch.float64)
    sign = torch.tensor([1.0 if (step // p) % 2 == 0 else -1.0 for p in PERIODS], dtype=torch.float64)
    y = sign[:, None, None] * (1 + 0.1 * torch.randn(len(SEEDS), batch, 12, generator=generator, dtype=torch.float64))
    return x, y


def set_phase(model: torch.nn.Module, online: bool) -> None:
    """Warm-up: train mode, memory off; online: eval mode, memory on."""
    model.train(not online)
    model.set_online(online)


def group_step(group: GroupNet, optimizer: GroupAdamW, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step of the group: the loss is the sum of the members' MSEs. Returns the forecasts [G, B, P]."""
    group.begin_step()
    out = group(x)
    optimizer.zero_grad(set_to_none=True)
    (out - y).square().mean(dim=(1, 2)).sum().backward()
    optimizer.step()
    group.end_step()
    return out.detach()


def solo_step(model: ForecastNet, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step of a solo model as harness.online.protocol.train_step takes it. Returns [B, P]."""
    model.begin_step()
    out = model(x)
    optimizer.zero_grad(set_to_none=True)
    F.mse_loss(out, y).backward()
    optimizer.step()
    model.end_step()
    return out.detach()


def step_solos_and_compare(step: int, out: torch.Tensor, triggers: torch.Tensor | None, solos: list[ForecastNet],
                           solo_optimizers: list[torch.optim.Optimizer], rng_states: list[torch.Tensor],
                           x: torch.Tensor, y: torch.Tensor, skip: set[int] | frozenset[int] = frozenset()) -> None:
    """Step each solo model (but those in `skip`) on its member's x [G, B, 48, 8] and y [G, B, 12], each
    with torch's global RNG to itself (rng_states, updated), and assert its forecast equals the group's
    out[i] to OUT_TOL and, when `triggers` [G, ...] is given, its trigger state equals triggers[i]."""
    for i, (solo, solo_optimizer) in enumerate(zip(solos, solo_optimizers, strict=True)):
        if i in skip:
            continue
        torch.set_rng_state(rng_states[i])
        want = solo_step(solo, solo_optimizer, x[i], y[i])
        rng_states[i] = torch.get_rng_state()
        assert torch.allclose(out[i], want, **OUT_TOL), (step, i, float((out[i] - want).abs().max()))
        if triggers is not None:
            assert torch.equal(triggers[i], solo_triggers(solo)), (step, i)


def run_group(config: dict[str, Any], steps: int, sync_free: bool) -> tuple[GroupNet, GroupAdamW, list[torch.Tensor]]:
    """A float64 group of SEEDS run for `steps` steps (WARM_UP_STEPS warm-up first); returns the forecasts."""
    group = build_group(config, SEEDS).double()
    group.set_sync_free(sync_free)
    optimizer = GroupAdamW(group, lr=1e-3, weight_decay=0.01, fused=True)
    generator = torch.Generator().manual_seed(0)
    outs = []
    for step in range(steps):
        online = step >= WARM_UP_STEPS
        set_phase(group, online)
        x, y = step_data(step, 1 if online else 4, generator)
        outs.append(group_step(group, optimizer, x, y))
    return group, optimizer, outs


def assert_states_match(group: GroupNet, solos: list[ForecastNet]) -> None:
    """Every member's state (solo layout) equals its solo model's, within the tolerances."""
    for i, solo in enumerate(solos):
        mine = group.member_state(i)
        reference = solo.state_dict()
        assert mine.keys() == reference.keys()
        for name, want in reference.items():
            got = mine[name]
            assert got.shape == want.shape and got.dtype == want.dtype, name
            if not want.is_floating_point():
                assert torch.equal(got, want), (i, name)
                continue
            tol = STAT_TOL if name.rsplit(".", 1)[-1] in GRADIENT_STATISTICS else PARAM_TOL
            assert torch.allclose(got, want, **tol), (i, name, float((got - want).abs().max()))


def assert_optimizer_states_match(group: GroupNet, optimizer: GroupAdamW, solos: list[ForecastNet],
                                  solo_optimizers: list[torch.optim.Optimizer]) -> None:
    """Each member's AdamW state equals its solo AdamW's: the same parameters hold state, the same
    step counts, the moments within tolerance."""
    for i, (solo, solo_optimizer) in enumerate(zip(solos, solo_optimizers, strict=True)):
        names = {p: n for n, p in solo.named_parameters()}
        reference = {names[p]: s for p, s in solo_optimizer.state.items()}
        mine = optimizer.member_state(i)
        assert mine.keys() == reference.keys(), (i, set(mine) ^ set(reference))
        for name, want in reference.items():
            assert float(mine[name]["step"]) == float(want["step"]), (i, name)
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.allclose(mine[name][key], want[key], rtol=1e-7, atol=1e-16), (i, name, key)


@pytest.mark.parametrize("preset", PRESETS)
def test_members_start_as_their_solo_models_bit_for_bit(preset: str) -> None:
    config = config_for(preset)
    group = build_group(config, SEEDS)
    solos, rng_states = solo_models(config, SEEDS)
    for i, solo in enumerate(solos):
        mine, reference = group.member_state(i), solo.state_dict()
        assert mine.keys() == reference.keys()
        for name, want in reference.items():
            assert torch.equal(mine[name], want), (i, name)
        assert group.generators is not None
        assert torch.equal(group.generators[i].get_state(), rng_states[i]), "dropout draws start where the solo's do"
    rebuilt = GroupNet.from_members([group.member_model(i) for i in range(len(SEEDS))], group.generators)
    for name, value in group.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], value), name


STEP_CASES = ([("ogd", False, "grouped"), ("nomem", False, "grouped")]
              + [(p, free, "grouped") for p in MEMORY_PRESETS for free in (True, False)]
              + [("ogd", False, "im2col"), ("fsnet", True, "im2col")])


@pytest.mark.parametrize(("preset", "sync_free", "layout"), STEP_CASES)
def test_grouped_steps_equal_solo_steps(preset: str, sync_free: bool, layout: str) -> None:
    """sync_free: the memory reads as masks over every layer (CUDA's default), else gathered
    (CPU's); layout: how the full-length convs run."""
    config = config_for(preset)
    group = build_group(config, SEEDS).double()
    group.set_sync_free(sync_free)
    group.set_conv_layout(layout)
    optimizer = GroupAdamW(group, lr=1e-3, weight_decay=0.01, fused=True)
    solos, rng_states = solo_models(config, SEEDS)
    solos = [m.double() for m in solos]
    solo_optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01, fused=True) for m in solos]
    generator = torch.Generator().manual_seed(0)
    mixed_steps = 0  # online steps where some member's memory was read and another's was not
    reads = torch.zeros(len(SEEDS))
    for step in range(WARM_UP_STEPS + ONLINE_STEPS):
        online = step >= WARM_UP_STEPS
        for model in (group, *solos):
            set_phase(model, online)
        x, y = step_data(step, 1 if online else 4, generator)
        armed = group.triggers()  # read at this step's begin_step
        out = group_step(group, optimizer, x, y)
        step_solos_and_compare(step, out, group.triggers() if armed is not None else None, solos,
                               solo_optimizers, rng_states, x, y)
        if armed is not None and online:
            fired = armed.any(1)
            reads += fired
            mixed_steps += int(bool(fired.any()) and not bool(fired.all()))
    assert_states_match(group, solos)
    assert_optimizer_states_match(group, optimizer, solos, solo_optimizers)
    diagnostics = group.diagnostics()
    for i, solo in enumerate(solos):
        want = solo.diagnostics()
        assert diagnostics[i].keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert value == pytest.approx(diagnostics[i][key], rel=1e-6, abs=1e-9, nan_ok=True), (i, key)
            else:
                assert diagnostics[i][key] == value, (i, key)
    if preset in MEMORY_PRESETS:
        assert mixed_steps >= 5, "the members' memories should fire on different steps"
        assert (reads > 0).all(), "every member's memory should have been read"
        assert len(set(reads.tolist())) > 1, "the members should differ in how often they read"


@pytest.mark.parametrize(("preset", "sync_free"), [("ogd", False), ("fsnet", True), ("ultra", True), ("ultra", False)])
def test_the_same_group_run_twice_gives_the_same_bits(preset: str, sync_free: bool) -> None:
    config = config_for(preset)
    runs = [run_group(config, WARM_UP_STEPS + 12, sync_free) for _ in range(2)]
    (group_a, opt_a, outs_a), (group_b, opt_b, outs_b) = runs
    assert all(torch.equal(a, b) for a, b in zip(outs_a, outs_b, strict=True))
    state_b = group_b.state_dict()
    for name, value in group_a.state_dict().items():
        assert torch.equal(value, state_b[name]), name
    for i in range(len(SEEDS)):
        moments_b = opt_b.member_state(i)
        for name, state in opt_a.member_state(i).items():
            for key, value in state.items():
                assert torch.equal(value, moments_b[name][key]), (i, name, key)


@pytest.mark.parametrize("dim", [0, 1])
def test_member_dropout_draws_what_f_dropout_draws(dim: int) -> None:
    x = torch.randn(3, 3, 5, 320, dtype=torch.float64)
    generators = [torch.Generator().manual_seed(seed) for seed in (7, 8, 9)]
    states = [g.get_state() for g in generators]
    out = member_dropout(x, 0.1, True, generators, dim=dim)
    for i, state in enumerate(states):
        torch.set_rng_state(state)  # the solo's draw: F.dropout from the global generator, [3, 5, 320]
        assert torch.equal(out.select(dim, i), F.dropout(x.select(dim, i).contiguous(), 0.1, training=True)), i
    assert member_dropout(x, 0.1, False, generators, dim=dim) is x


class HostSyncDetector(TorchDispatchMode):
    """Records every aten operator that reads a tensor's value back to the host (a CUDA sync)."""

    SYNCING = frozenset({"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal", "item",
                         "unique", "_unique2"})

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        """Note a syncing operator (or boolean-mask indexing, a hidden nonzero), then run it."""
        self.ops += 1
        name = func.overloadpacket.__name__
        if name in self.SYNCING:
            self.syncs.append(name)
        if name in ("index", "index_put", "index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None):
            self.syncs.append(f"{name} with a boolean mask")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("preset", PRESETS)
def test_grouped_online_step_reads_nothing_back_to_the_host(preset: str) -> None:
    config = config_for(preset)
    group = build_group(config, SEEDS[:2])
    group.set_sync_free(True)
    set_phase(group, True)
    optimizer = GroupAdamW(group, lr=1e-3, fused=True)
    for bank in group.banks():
        if hasattr(bank, "trigger"):
            bank.trigger[::3] = True  # some layers of some members read their memory
    x, y = torch.randn(2, 1, 48, 8), torch.randn(2, 1, 12)
    for _ in range(2):  # the first and a later query EMA step
        with HostSyncDetector() as detector:
            group.begin_step()
            out = group(x)
            optimizer.zero_grad(set_to_none=True)
            (out - y).square().mean(dim=(1, 2)).sum().backward()
            optimizer.step()
            group.end_step()
        assert detector.ops > 100, "the detector sees the step's operators"
        assert detector.syncs == [], detector.syncs
    if preset == "fsnet":  # the detector does catch the solo step's syncs (its trigger check and gather)
        solo = group.member_model(0)
        solo.adaptive.banks[0].trigger.fill_(True)
        with HostSyncDetector() as detector:
            solo.begin_step()
        assert "_local_scalar_dense" in detector.syncs and "nonzero" in detector.syncs


def test_conditional_tau_is_stepped_only_for_members_that_read() -> None:
    """advanced's adaptive tau: a member whose bank read nothing keeps its tau and its AdamW state."""
    group = build_group(config_for("advanced"), SEEDS[:2])
    group.set_sync_free(True)
    set_phase(group, True)
    optimizer = GroupAdamW(group, lr=1e-2, fused=True)
    bank = group.banks()[0]
    bank.trigger.view(-1, 2)[:, 0] = True  # member 0's layers of bank 0 only
    names = ("adaptive.banks.0.tau_w", "adaptive.banks.0.tau_b")
    params = dict(group.named_parameters())
    before = {(n, i): member_part(n, params[n], i, 2).clone() for n in names for i in range(2)}
    group.begin_step()
    group(torch.randn(2, 1, 48, 8)).square().sum().backward()
    optimizer.step()
    # tau_b's gradient is non-zero (tau_w's is zero on a first step: its input, the EMAs, still is)
    assert not torch.equal(member_part(names[1], params[names[1]], 0, 2), before[names[1], 0])
    for name in names:
        assert torch.equal(member_part(name, params[name], 1, 2), before[name, 1]), name
        assert name in optimizer.member_state(0) and name not in optimizer.member_state(1)
        assert float(optimizer.member_state(0)[name]["step"]) == 1.0


def test_member_mask_selects_whole_members() -> None:
    config = config_for("ultra")
    groups = [build_group(config, seeds) for seeds in ([0, 1, 2], [3, 4, 5])]
    chosen = torch.tensor([True, False, True])
    mixed = {name: torch.where(member_mask(name, value, chosen), value, groups[1].state_dict()[name])
             for name, value in groups[0].state_dict().items()}
    for i, source in enumerate((0, 1, 0)):
        want = groups[source].member_state(i)
        for name, value in mixed.items():
            assert torch.equal(member_part(name, value, i, 3), want[name]), (i, name)


def test_groups_refuse_what_they_cannot_hold() -> None:
    with pytest.raises(ValueError, match="nothing to group"):
        build_group(resolve_config("persistence"), SEEDS)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="fast layout"):
        GroupNet(build_from_config(resolve_config("ogd"), fast=False), 2)
    models = [build_from_config(resolve_config("fsnet")), build_from_config(resolve_config("advanced"))]
    with pytest.raises(ValueError, match="one configuration"):
        GroupNet.from_members(models)
    group = build_group(resolve_config("ogd"), SEEDS)
    with pytest.raises(ValueError, match="expected input"):
        group(torch.randn(2, 1, 48, 8))


def save_member(group: GroupNet, optimizer: GroupAdamW, member: int) -> dict[str, Any]:
    """Member `member`'s state now (copies): model, optimiser, dropout generator."""
    assert group.generators is not None
    return {"model": group.member_state(member), "optimizer": optimizer.member_snapshot(member),
            "dropout": group.generators[member].get_state()}


@torch.no_grad()
def restore_member(group: GroupNet, optimizer: GroupAdamW, member: int, saved: dict[str, Any]) -> None:
    """Give member `member` back what `save_member` saved (the optimiser goes to its per-member mode)."""
    for name, value in group.state_dict().items():
        if name.rsplit(".", 1)[-1] != "q_started":  # one flag for all members
            member_part(name, value, member, group.members).copy_(saved["model"][name])
    optimizer.load_member(member, saved["optimizer"])
    assert group.generators is not None
    group.generators[member].set_state(saved["dropout"])


STOPPED, STOP_AFTER = 1, 2  # member 1's solo takes 2 of the WARM_UP_STEPS warm-up steps
MEMBER_LRS = [2e-3, 5e-4, 1e-3]


@pytest.mark.parametrize("sync_free", [True, False])
def test_the_per_member_mode_steps_each_member_as_its_solo_adamw(sync_free: bool) -> None:
    """Members with AdamW step counts and rates of their own (harness.online.group_runner.warm_up_group:
    members stopping warm-up at different epochs). Member 1's solo stops after 2 warm-up steps: its
    state then is saved, the group steps on, and the saved state is loaded back; then each member
    gets its own rate and the online steps run in the per-member mode (the adaptive tau's masked
    AdamW included). Every step's forecasts, and at the end every state, against the solo models."""
    config = config_for("advanced")
    group = build_group(config, SEEDS).double()
    group.set_sync_free(sync_free)
    optimizer = GroupAdamW(group, lr=1e-3, weight_decay=0.01, fused=True)
    solos, rng_states = solo_models(config, SEEDS)
    solos = [m.double() for m in solos]
    solo_optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01, fused=True) for m in solos]
    generator = torch.Generator().manual_seed(0)
    saved: dict[str, Any] = {}
    for step in range(WARM_UP_STEPS + ONLINE_STEPS):
        online = step >= WARM_UP_STEPS
        if step == WARM_UP_STEPS:
            assert not optimizer.per_member
            restore_member(group, optimizer, STOPPED, saved)
            assert optimizer.per_member
            for i, lr in enumerate(MEMBER_LRS):
                snapshot = optimizer.member_snapshot(i)
                optimizer.load_member(i, {**snapshot, "lr": [lr, lr]})
                for solo_group in solo_optimizers[i].param_groups:
                    solo_group["lr"] = lr
            assert [optimizer.member_lrs(i) for i in range(3)] == [[lr, lr] for lr in MEMBER_LRS]
        for model in (group, *solos):
            set_phase(model, online)
        x, y = step_data(step, 1 if online else 4, generator)
        out = group_step(group, optimizer, x, y)
        stopped = {STOPPED} if not online and step >= STOP_AFTER else set()  # its solo's warm-up is over;
        # the group's member 1 trains on, unseen
        step_solos_and_compare(step, out, group.triggers(), solos, solo_optimizers, rng_states, x, y, skip=stopped)
        if step == STOP_AFTER - 1:
            saved = save_member(group, optimizer, STOPPED)
    assert_states_match(group, solos)
    assert_optimizer_states_match(group, optimizer, solos, solo_optimizers)
    steps = [float(optimizer.member_state(i)["head.weight"]["step"]) for i in range(3)]
    assert steps == [WARM_UP_STEPS + ONLINE_STEPS, STOP_AFTER + ONLINE_STEPS, WARM_UP_STEPS + ONLINE_STEPS]
    assert optimizer.masked_state, "some member's tau should have been stepped (memory read)"
    # a state_dict round trip keeps the per-member mode: the same next step, bit for bit
    other = build_group(config, SEEDS).double()
    other.load_state_dict(group.state_dict())
    other.set_sync_free(sync_free)
    other_optimizer = GroupAdamW(other, lr=1.0, weight_decay=0.01, fused=True)
    buffer = io.BytesIO()  # as a checkpoint file: torch's AdamW state_dict holds its state tensors themselves
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    other_optimizer.load_state_dict(torch.load(buffer, weights_only=False))
    assert other_optimizer.per_member and [other_optimizer.member_lrs(i) for i in range(3)] == [
        [lr, lr] for lr in MEMBER_LRS]
    x, y = step_data(0, 1, generator)
    for model, opt in ((group, optimizer), (other, other_optimizer)):
        set_phase(model, True)
        group_step(model, opt, x, y)
    for name, value in group.state_dict().items():
        assert torch.equal(value, other.state_dict()[name]), name
    # writing a group's "lr" sets every member's rate (set_online_learning_rate)
    for param_group in optimizer.param_groups:
        param_group["lr"] = 3e-5
    assert [optimizer.member_lrs(i) for i in range(3)] == [[3e-5, 3e-5]] * 3


@pytest.mark.parametrize("preset", ["ogd", "advanced"])
def test_the_per_member_step_reads_nothing_back_to_the_host(preset: str) -> None:
    group = build_group(config_for(preset), SEEDS[:2])
    group.set_sync_free(True)
    set_phase(group, True)
    optimizer = GroupAdamW(group, lr=1e-3, fused=True)
    optimizer.load_member(1, {**optimizer.member_snapshot(1), "lr": [5e-4] * len(optimizer.param_groups)})
    assert optimizer.per_member
    for bank in group.banks():
        if hasattr(bank, "trigger"):
            bank.trigger[::3] = True  # some layers of some members read their memory
    x, y = torch.randn(2, 1, 48, 8), torch.randn(2, 1, 12)
    for _ in range(2):  # the step that makes the AdamW state, and a later one
        with HostSyncDetector() as detector:
            group.begin_step()
            out = group(x)
            optimizer.zero_grad(set_to_none=True)
            (out - y).square().mean(dim=(1, 2)).sum().backward()
            optimizer.step()
            group.end_step()
        assert detector.ops > 100, "the detector sees the step's operators"
        assert detector.syncs == [], detector.syncs
    assert float(optimizer.member_state(1)["head.weight"]["step"]) == 2.0


def test_members_in_lockstep_keep_the_fused_torch_adamw() -> None:
    """Off the per-member mode (the default) a GroupAdamW's step is its fused torch AdamW's, bit for
    bit: the same as torch.optim.AdamW(fused=True) over the group's parameters."""
    config = config_for("ogd")  # no conditional parameters: the inner AdamW holds them all
    groups = [build_group(config, SEEDS).double() for _ in range(2)]
    optimizer = GroupAdamW(groups[0], lr=1e-3, weight_decay=0.01, fused=True)
    reference = torch.optim.AdamW(groups[1].parameters(), lr=1e-3, weight_decay=0.01, fused=True)
    generator = torch.Generator().manual_seed(0)
    for step in range(6):
        x, y = step_data(step, 2, generator)
        for group, opt in zip(groups, (optimizer, reference), strict=True):
            set_phase(group, True)
            group_step(group, opt, x, y)  # type: ignore[arg-type]
    assert not optimizer.per_member and optimizer.state_dict()["per_member"] is None
    for name, value in groups[0].state_dict().items():
        assert torch.equal(value, groups[1].state_dict()[name]), name
