"""The training guard: injected NaNs, explosions and raising steps are undone with real training steps
of a tiny equilibrium piece; the learning rate backs off (bounded); stasis is detected and, when the
show says so, answered with a perturbation; the live engine keeps showing good weights meanwhile."""

import copy
import json
import math
import types

import pytest
import torch
from torch.overrides import TorchFunctionMode
from test_engine import make_engine, wait_for
from test_show import SHOW, write_show

from helpers import nested_tensors
from unstable.directions import DirectionSettings
from unstable.guard import GuardSettings, TrainingGuard, clone_state, copy_state
from unstable.instruments import Instrumented
from unstable.schema import defaults
from unstable.system import accumulate_modules, build_system, load_piece


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def system(tmp_path):
    write_show(tmp_path)
    torch.manual_seed(1)
    return build_system(load_piece(tmp_path / "pieces" / "eq.toml"), torch.device("cpu"))


def weights(system) -> list[torch.Tensor]:
    return [p.detach().clone() for g in system.generators for p in g.parameters()] + \
        [p.detach().clone() for p in system.critic.parameters()]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def nan_weights(system):
    with torch.no_grad():
        next(system.generators[0].parameters()).fill_(float("nan"))


def test_nan_in_the_weights_is_undone_and_the_learning_rate_backs_off(system):
    guard = TrainingGuard(system, GuardSettings(good_every=1))
    params = defaults(system.param_specs())
    for _ in range(3):
        assert guard.step(params) is not None
    good, good_step = weights(system), system.step_count
    base_c = system.piece.critic.optim.lr

    guard.before_step.append(nan_weights)
    assert guard.step(params) is None
    guard.before_step.clear()
    assert guard.last_reason.startswith("non-finite")
    assert system.step_count == good_step and same(weights(system), good)
    assert guard.recoveries == 1 and guard.lr_scale == 0.5

    scalars = guard.step(params)  # training goes on, at half the rate the performer asked for
    assert scalars is not None and all(math.isfinite(v) for v in scalars.values())
    assert system.opt_c.param_groups[0]["lr"] == pytest.approx(base_c * 0.5)
    assert all(torch.isfinite(w).all() for w in weights(system))
    assert system.step_count == good_step + 1
    assert guard.events[-1]["reason"] == guard.last_reason


def test_an_explosion_is_undone_and_repeated_failures_stop_training_with_a_bounded_rate(system):
    guard = TrainingGuard(system, GuardSettings(good_every=1, max_grad_norm=1e3, max_failures=4,
                                                 backoff=0.25, min_lr_scale=0.1))
    params = defaults(system.param_specs())
    assert guard.step(params) is not None
    good = weights(system)

    def explode(s):  # weights blown up by 1e6: the loss, gradients or weights leave every sane range
        with torch.no_grad():
            for p in s.generators[0].parameters():
                p.mul_(1e6)

    guard.before_step.append(explode)
    for i in range(4):
        assert guard.step(params) is None, i
        assert same(weights(system), good)
    assert guard.lr_scale == 0.1  # 0.25, 0.0625 -> floored at 0.1
    assert guard.stopped is not None and "4 failed steps in a row" in guard.stopped
    guard.before_step.clear()
    assert guard.step(params) is None  # stopped stays stopped


def test_a_gradient_norm_past_the_limit_undoes_a_real_step(system):
    guard = TrainingGuard(system, GuardSettings(max_grad_norm=1e-9))
    before = weights(system)
    assert guard.step(defaults(system.param_specs())) is None
    assert guard.last_reason.startswith("gradient norm") and same(weights(system), before)


def test_a_raising_step_is_undone_and_counted(system):
    guard = TrainingGuard(system, GuardSettings(good_every=1))
    params = defaults(system.param_specs())
    guard.step(params)

    def boom(s):
        s.step_count += 100  # half-done work, as a crash mid-step would leave it
        raise RuntimeError("injected")

    guard.before_step.append(boom)
    assert guard.step(params) is None
    assert guard.exceptions == 1 and "RuntimeError: injected" in guard.last_reason
    assert system.step_count == 1


def test_stasis_is_detected_and_answered_with_a_perturbation(system):
    settings = GuardSettings(stasis_patience=2, stasis_threshold=0.01, stasis_response="perturb")
    guard = TrainingGuard(system, settings)
    params = {**defaults(system.param_specs()), "noise": 0.0}
    report = guard.check_stasis(params)
    assert report["variety"] > 0.01 and not report["stasis"]
    with torch.no_grad():  # a collapsed piece: every latent gives the same flat image
        for g in system.generators:
            for p in g.parameters():
                p.zero_()
    assert not guard.check_stasis(params)["stasis"]  # patience: one low check is not stasis
    before = weights(system)
    report = guard.check_stasis(params)
    assert report["variety"] < 0.01 and report["stasis"] and report["perturbed"]
    assert guard.stasis_events == 1 and guard.perturbations == 1
    assert not same(weights(system), before)
    assert guard.telemetry()["stasis"] is True


def test_copy_state_reuses_its_buffers(system):
    system.step({})  # Adam's moments exist from the first step on: from then the structure holds
    kept = copy_state(None, system.state_dict())
    ptr = kept["generators"][0][next(iter(kept["generators"][0]))].data_ptr()
    system.step({})
    again = copy_state(kept, system.state_dict())
    assert again["generators"][0][next(iter(again["generators"][0]))].data_ptr() == ptr
    assert again["step"] == 2
    assert again["opt_g"]["state"][0]["exp_avg"].data_ptr() == kept["opt_g"]["state"][0]["exp_avg"].data_ptr()
    c = clone_state(again)
    assert c["critic"] is not again["critic"]


def test_unstable_train_is_guarded(tmp_path, monkeypatch):
    # `unstable train` on a tiny piece whose third step leaves NaN in the weights (the real step,
    # then a poisoned weight): the guard undoes it, logs why, and training reaches its step count
    # with finite weights in the checkpoint. Without the guard the NaN would train on and be saved.
    from click.testing import CliRunner

    from unstable.checkpoint import load_checkpoint
    from unstable.cli import main
    from unstable.equilibrium.system import EquilibriumSystem
    real_step, calls = EquilibriumSystem.step, []

    def step_with_a_nan(self, params):
        scalars = real_step(self, params)
        calls.append(self.step_count)
        if len(calls) == 3:
            nan_weights(self)
        return scalars

    monkeypatch.setattr(EquilibriumSystem, "step", step_with_a_nan)
    write_show(tmp_path)
    result = CliRunner().invoke(main, ["train", str(tmp_path / "pieces" / "eq.toml"), "--steps", "4",
                                       "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    undone = [ln for ln in lines if "guard" in ln]
    assert len(undone) == 1 and undone[0]["guard"].startswith("non-finite") and undone[0]["lr_scale"] == 0.5
    trained = [ln for ln in lines if "guard" not in ln]
    assert trained[-1]["step"] == 4 and len(calls) > 4  # the undone step was trained again
    assert all(math.isfinite(v) for ln in trained for v in ln.values())
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["step"] == 4
    floats = [t for t in nested_tensors(ckpt["system"]) if t.is_floating_point()]
    assert floats and all(torch.isfinite(t).all() for t in floats)


def test_the_live_engine_undoes_nan_steps_and_the_display_keeps_good_weights(tmp_path):
    text = SHOW.replace("[layout]", "[training]\nprocess = false\n[guard]\ngood_every = 1\nstasis_every = 0.2\n[layout]")
    # The hooks run in the training thread (test_train_process injects faults into the process).
    eng = make_engine(tmp_path, text, train=True)
    with eng:
        eq, eq2 = eng.pieces["eq"], eng.pieces["eq2"]
        assert wait_for(lambda: eq.steps >= 2 and eq2.steps >= 2, 20)
        poisoned = []

        def poison(s):
            poisoned.append(True)
            nan_weights(s)

        eq.guard.before_step.append(poison)
        assert wait_for(lambda: len(poisoned) >= 3 and eq.guard.recoveries >= 3, 20)
        eq.guard.before_step.clear()
        steps = eq.steps
        assert wait_for(lambda: eq.steps >= steps + 2 and eq2.steps >= 4, 20)  # both train on
        assert eq.error is None and eq.guard.lr_scale < 1.0
        with eq.mirror.lock:
            assert all(torch.isfinite(p).all() for g in eq.mirror.system.generators for p in g.parameters())
        eng.frame(0.0)
        assert eng.read().any()
        assert wait_for(lambda: eq.guard.variety is not None, 10)  # stasis probe ran in the training thread


def test_guard_settings_are_validated_from_the_show_file(tmp_path):
    from unstable.errors import ConfigError
    from unstable.show import load_show
    text = SHOW.replace("[layout]", "[guard]\nstasis_response = \"perturb\"\nperturb_scale = 0.1\n[layout]")
    show = load_show(write_show(tmp_path, text))
    assert show.settings.guard.stasis_response == "perturb" and show.settings.guard.perturb_scale == 0.1
    bad = SHOW.replace("[layout]", "[guard]\nstasis_response = \"exec\"\n[layout]")
    with pytest.raises(ConfigError, match="stasis_response") as e:
        load_show(write_show(tmp_path, bad))
    assert "\n" not in str(e.value)


def test_a_restore_drops_the_failed_steps_gradients(system):
    # With the critic's update switched off, its gradients are not recomputed: a NaN left in them by
    # the failed step would fail every later check.
    guard = TrainingGuard(system, GuardSettings(good_every=1))
    params = {**defaults(system.param_specs()), "critic_training": 0.0}
    assert guard.step(defaults(system.param_specs())) is not None

    def nan_critic(s):
        nan_weights(s)
        with torch.no_grad():
            next(s.critic.parameters()).fill_(float("nan"))

    guard.before_step.append(nan_critic)
    guard.step(defaults(system.param_specs()))
    guard.before_step.clear()
    for _ in range(3):
        assert guard.step(params) is not None, guard.last_reason
    assert guard.recoveries == 1


def test_a_stopped_guard_can_try_again_later(system, monkeypatch):
    import types

    import unstable.guard as guard_module
    now = [1000.0]  # the guard's clock, moved by the test: a busy machine cannot stretch the wait
    monkeypatch.setattr(guard_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    guard = TrainingGuard(system, GuardSettings(max_failures=2, retry_after=0.05))
    params = defaults(system.param_specs())
    guard.before_step.append(nan_weights)
    guard.step(params)
    guard.step(params)
    now[0] += 0.049
    assert guard.stopped and not guard.retry_due()
    guard.before_step.clear()
    now[0] += 0.002
    assert guard.retry_due()
    guard.retry()
    assert guard.stopped is None and guard.step(params) is not None and guard.retries == 1


def test_a_non_finite_loss_is_undone(system):
    # The system steps a NaN loss like any other (it keeps no bad-step handling); the guard undoes it.
    guard = TrainingGuard(system, GuardSettings(good_every=1))
    params = defaults(system.param_specs())
    assert guard.step(params) is not None
    good = weights(system)
    assert guard.step({**params, "impersonate_weight": float("nan")}) is None
    assert guard.last_reason.startswith("non-finite") and same(weights(system), good)
    assert guard.step(params) is not None


class Hidden(Instrumented):
    """A System keeping its network and optimiser in dicts, where no scan of its attributes finds
    them: the guard and the mirror reach them through `modules()` and `optimizers()` alone. Its
    instruments (none: no bends, no directions) come from the shared mixin, as a new System's would."""

    def __init__(self):
        torch.manual_seed(0)
        self.piece = types.SimpleNamespace(name="hidden", kind="hidden", seed=0)
        self.device = torch.device("cpu")
        self.step_count = 0
        self._nets = {"net": torch.nn.Linear(4, 3)}
        self._opts = {"net": torch.optim.SGD(self._nets["net"].parameters(), lr=0.1)}
        self._build_instruments((), DirectionSettings())

    def modules(self):
        return dict(self._nets)

    def optimizers(self):
        return dict(self._opts)

    def param_specs(self):
        return []  # no live learning_rate: the guard backs off the declared optimisers

    def panels(self):
        return {"p": 4}

    def step(self, params):
        loss = (self._nets["net"](torch.ones(2, 4)) - 1).pow(2).mean()
        self._opts["net"].zero_grad()
        loss.backward()
        self._opts["net"].step()
        self.step_count += 1
        return {"loss": float(loss.detach())}

    def sample(self, latents, params):
        return {k: self._nets["net"](z).sigmoid()[:, :, None, None].expand(-1, 3, 2, 2) for k, z in latents.items()}

    def state_dict(self):
        return {"net": self._nets["net"].state_dict(), "opt": self._opts["net"].state_dict(), "step": self.step_count}

    def load_state_dict(self, state):
        self._nets["net"].load_state_dict(state["net"])
        self._opts["net"].load_state_dict(state["opt"])
        self.step_count = state["step"]

    def sampling_copy(self):
        twin = copy.copy(self)
        twin._nets = {"net": copy.deepcopy(self._nets["net"]).requires_grad_(False)}
        twin._opts = {}
        return twin

    def accumulate(self, source, decay=0.0):
        accumulate_modules(self._nets, source._nets, decay)
        self.step_count = source.step_count

    def prepare_sampling(self):
        pass  # nothing built on first use

    def sampled_for_long(self, weights_lock=None):
        pass  # nothing it would build for a long show


def test_the_guard_and_the_mirror_use_the_protocol_only():
    from unstable.live import SamplingMirror
    s = Hidden()
    guard = TrainingGuard(s, GuardSettings(good_every=1))
    assert guard.step({}) is not None
    good = s._nets["net"].weight.detach().clone()
    guard.before_step.append(lambda sys: sys._nets["net"].weight.data.fill_(float("nan")))
    assert guard.step({}) is None and guard.last_reason == "non-finite loss (nan)"
    guard.before_step.clear()
    assert torch.equal(s._nets["net"].weight, good) and s._nets["net"].weight.grad is None
    assert s._opts["net"].param_groups[0]["lr"] == pytest.approx(0.05)  # backed off through optimizers()

    mirror = SamplingMirror(s)
    z = {"p": torch.ones(1, 4)}
    before = mirror.sample(z, {})["p"]
    assert guard.step({}) is not None
    assert torch.equal(mirror.sample(z, {})["p"], before)
    mirror.sync()
    assert mirror.system.step_count == s.step_count == 2
    assert torch.equal(mirror.sample(z, {})["p"], s.sample(z, {})["p"])


# Pinned by mutation testing (docs/mutation.md).

def test_telemetry_reports_what_happened_rounded(system, caplog):
    guard = TrainingGuard(system, GuardSettings(good_every=1, backoff=1 / 3, max_failures=1, retry_after=0),
                          name="eq")
    assert guard.telemetry() == {"recoveries": 0, "lr_scale": 1.0}
    params = defaults(system.param_specs())
    guard.check_stasis(params)
    guard.perturb(0.01)  # the weights move between the two checks: a motion with many decimals
    guard.check_stasis(params)
    assert guard.variety is not None and guard.motion and guard.motion != round(guard.motion, 5)
    guard.before_step.append(nan_weights)
    assert guard.step(params) is None
    guard.before_step.clear()
    guard.in_stasis = True
    t = guard.telemetry()
    assert t == {"recoveries": 1, "lr_scale": 0.33333, "variety": round(guard.variety, 5),
                 "motion": round(guard.motion, 5), "stasis": True, "perturbations": 1,
                 "last": guard.last_reason, "stopped": guard.stopped}
    assert guard.stopped.startswith("1 failed steps in a row, the last: non-finite")
    assert not guard.retry_due()  # retry_after 0: a stopped piece stays stopped

    caplog.set_level("WARNING", logger="unstable.guard")
    reason = guard.stopped
    guard.retry()
    assert guard.stopped is None and guard.failures == 0 and guard.retries == 1 and not guard.retry_due()
    assert f"eq: training again after {reason}" in [r.getMessage() for r in caplog.records]
    guard.before_step.append(nan_weights)
    assert guard.step(params) is None and guard.stopped  # stops again after one failure
    guard.retry()
    assert guard.retries == 2


def test_perturb_adds_seeded_noise_scaled_to_each_tensors_spread(system, caplog):
    """perturb(scale): every floating parameter p gets randn * scale * max(spread, 1e-3), where the
    spread is std(p), or |p| for a one-element tensor; the noise generator is seeded 7, 8, 9...
    for the first, second, third perturbation unless a seed is given."""
    caplog.set_level("WARNING", logger="unstable.guard")
    guard = TrainingGuard(system, name="eq")
    params = [p for m in system.modules().values() for p in m.parameters()]  # the guard's own order

    def expected(seed, scale):
        g = torch.Generator().manual_seed(seed)
        out = []
        for p in params:
            p = p.detach()
            spread = p.std() if p.numel() > 1 else p.abs().reshape(())
            spread = torch.nan_to_num(spread, nan=0.0).clamp_min(1e-3)
            out.append(p + torch.randn(p.shape, generator=g) * (scale * spread))
        return out

    for seed in (7, 8):
        want = expected(seed, 0.05)
        guard.perturb()
        assert all(torch.allclose(p.detach(), w, atol=1e-7, rtol=0) for p, w in zip(params, want))
    want = expected(123, 0.2)
    guard.perturb(0.2, seed=123)
    assert all(torch.allclose(p.detach(), w, atol=1e-7, rtol=0) for p, w in zip(params, want))
    want = expected(10, 0.05)  # the fourth perturbation: seed 7 + 3
    guard.perturb()
    assert all(torch.allclose(p.detach(), w, atol=1e-7, rtol=0) for p, w in zip(params, want))
    assert guard.perturbations == 4
    assert "eq: perturbed the weights (noise x0.2 of their spread)" in [r.getMessage() for r in caplog.records]


def test_perturb_skips_integer_parameters_keeps_each_dtype_and_floors_a_nan_spread():
    """Integer parameters are left alone and the ones after them still perturbed; a float64 weight
    gets float64 noise; a NaN spread counts as 0, i.e. the 1e-3 floor (the finite entries of a
    tensor holding a NaN move by noise x scale x 1e-3, not x 1)."""
    s = Hidden()
    net = torch.nn.Module()
    net.count = torch.nn.Parameter(torch.tensor([3, 4]), requires_grad=False)  # first: an int tensor
    net.w64 = torch.nn.Parameter(torch.tensor([[1.0, -2.0, 0.5], [4.0, 0.0, 1.5]], dtype=torch.float64))
    net.holed = torch.nn.Parameter(torch.tensor([float("nan"), 1.0, 2.0, 3.0]))
    s._nets = {"net": net}
    guard = TrainingGuard(s)
    w64, holed = net.w64.detach().clone(), net.holed.detach().clone()

    guard.perturb(0.5, seed=3)
    g = torch.Generator().manual_seed(3)
    want64 = w64 + torch.randn(2, 3, generator=g, dtype=torch.float64) * (0.5 * w64.std())
    want_holed = holed + torch.randn(4, generator=g) * (0.5 * 1e-3)
    assert torch.equal(net.count, torch.tensor([3, 4]))
    assert net.w64.dtype == torch.float64 and torch.allclose(net.w64.detach(), want64, rtol=0, atol=1e-12)
    assert torch.isnan(net.holed[0])
    assert torch.allclose(net.holed.detach()[1:], want_holed[1:], rtol=0, atol=1e-7)
    assert (net.holed.detach()[1:] - holed[1:]).abs().max() < 0.01


def test_a_guard_whose_good_state_does_not_load_never_retries_even_after_a_retry():
    """A restore failure stops the guard for good (no retry time), also once it has retried before."""
    s = Hidden()
    guard = TrainingGuard(s, GuardSettings(good_every=1, max_failures=1, retry_after=1e-9))
    assert guard.step({}) is not None
    nan = lambda sys: sys._nets["net"].weight.data.fill_(float("nan"))  # noqa: E731
    guard.before_step.append(nan)
    assert guard.step({}) is None and guard.stopped and guard.retry_due()
    guard.retry()
    assert not guard.retry_due()

    def broken(state):
        raise RuntimeError("disk gone")

    s.load_state_dict = broken
    assert guard.step({}) is None
    assert "restoring the last good state failed: RuntimeError: disk gone" in guard.stopped
    assert guard.retry_due() is False


def test_the_backed_off_learning_rate_doubles_back_after_recover_steps_good_steps(caplog):
    """After a backoff, every `recover_steps` good steps double the rate back, never above the
    performer's value; recover_steps 0 never brings it back. A system without a live
    `learning_rate` gets it through its optimisers' lr."""
    caplog.set_level("INFO", logger="unstable.guard")
    s = Hidden()
    guard = TrainingGuard(s, GuardSettings(good_every=1, backoff=0.25, recover_steps=3), name="h")
    lr = lambda: s._opts["net"].param_groups[0]["lr"]  # noqa: E731
    nan = lambda sys: sys._nets["net"].weight.data.fill_(float("nan"))  # noqa: E731
    assert guard.step({}) is not None
    guard.before_step.append(nan)
    assert guard.step({}) is None
    guard.before_step.clear()
    assert guard.lr_scale == 0.25 and lr() == pytest.approx(0.025)
    scales = []
    for _ in range(7):
        assert guard.step({}) is not None
        scales.append(guard.lr_scale)
    assert scales == [0.25, 0.25, 0.5, 0.5, 0.5, 1.0, 1.0]
    assert lr() == pytest.approx(0.1)
    assert "h: learning rate back to x0.5" in [r.getMessage() for r in caplog.records]

    never = TrainingGuard(Hidden(), GuardSettings(good_every=1, backoff=0.5, recover_steps=0))
    never.step({})
    never.before_step.append(nan)
    never.step({})
    never.before_step.clear()
    for _ in range(5):
        never.step({})
    assert never.lr_scale == 0.5

    every = TrainingGuard(Hidden(), GuardSettings(good_every=1, backoff=0.375, recover_steps=1))
    every.step({})
    every.before_step.append(nan)
    every.step({})
    every.before_step.clear()
    got = []
    for _ in range(3):
        every.step({})
        got.append(every.lr_scale)
    assert got == [0.75, 1.0, 1.0]  # recover_steps 1: each good step doubles it, capped at 1


# -- details the mutation run found unpinned (docs/mutation.md, guard) --------------------------------

def test_the_guard_is_named_after_its_piece():
    assert TrainingGuard(Hidden()).name == "hidden"
    assert TrainingGuard(Hidden(), name="wall").name == "wall"
    nameless = Hidden()
    nameless.piece = types.SimpleNamespace(kind="hidden")
    assert TrainingGuard(nameless).name == "piece"
    nameless.piece = None
    assert TrainingGuard(nameless).name == "piece"
    del nameless.piece
    assert TrainingGuard(nameless).name == "piece"


def test_copy_state_clones_whenever_the_structure_differs_anywhere():
    src = {"a": torch.arange(6.0).reshape(2, 3), "b": [torch.zeros(2), torch.ones(1)], "n": 3}

    def fresh(dst):
        """copy_state(dst, src) made new tensors equal to src and left dst as it was."""
        before = clone_state(dst)
        out = copy_state(dst, src)
        leaves = [out["a"], *out["b"]]
        assert all(torch.equal(x, y) for x, y in zip(leaves, [src["a"], *src["b"]]))
        assert all(x.data_ptr() != y.data_ptr() for x, y in zip(leaves, [src["a"], *src["b"]]))
        after, ref = list(nested_tensors(dst)), list(nested_tensors(before))
        assert len(after) == len(ref) and all(torch.equal(x, y) for x, y in zip(after, ref))
        return out

    like = clone_state(src)
    like["a"].zero_()
    reused = copy_state(like, src)
    assert reused["a"].data_ptr() == like["a"].data_ptr() and torch.equal(reused["a"], src["a"])
    fresh({**like, "a": torch.zeros(3, 2)})                           # another shape
    fresh({**like, "a": torch.zeros(2, 3, dtype=torch.float64)})      # another dtype
    fresh({**like, "a": "not a tensor"})
    fresh({**like, "b": tuple(like["b"])})                            # a tuple for a list
    fresh({**like, "b": like["b"][:1]})                               # a shorter list
    fresh({**like, "b": [torch.zeros(3), torch.ones(1)]})             # a nested tensor of another shape
    fresh({"a": like["a"], "b": like["b"]})                           # a key missing


def test_good_states_are_kept_every_good_every_steps_counted_from_the_first():
    s = Hidden()
    guard = TrainingGuard(s, GuardSettings(good_every=2))
    for _ in range(3):
        assert guard.step({}) is not None
    assert guard.good_steps == 3
    guard.before_step.append(lambda system: (_ for _ in ()).throw(RuntimeError("boom")))
    assert guard.step({}) is None
    assert s.step_count == 2  # the state kept after the second good step, not the third


class _Clones(TorchFunctionMode):
    """Counts the tensors cloned under it."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.clone, torch.clone):
            self.count += 1
        return func(*args, **(kwargs or {}))


def clones(call) -> int:
    with _Clones() as seen:
        call()
    return seen.count


def test_the_kept_good_state_reuses_its_buffers():
    """A good state is copied into the tensors kept the first time: after the first, remembering
    clones nothing the system's own `state_dict()` does not (a show's weeks of good steps allocate
    nothing new), and what comes back on a failure is the state remembered last."""
    s = Hidden()
    guard = TrainingGuard(s, GuardSettings(good_every=1))
    own = clones(s.state_dict)
    assert clones(guard.remember) > own  # the first time: the kept copy is made
    for _ in range(3):
        assert guard.step({}) is not None
        assert clones(guard.remember) == own
    kept = s.modules()["net"].weight.detach().clone()
    guard.before_step.append(lambda system: system.modules()["net"].weight.data.add_(1.0).mul_(float("nan")))
    assert guard.step({}) is None
    assert torch.equal(s.modules()["net"].weight, kept)  # the kept copy was not the live tensor


def test_the_event_list_keeps_the_64_most_recent():
    s = Hidden()
    guard = TrainingGuard(s, GuardSettings(max_failures=1000, min_lr_scale=1 / 64))
    assert guard.last_reason is None and not guard.events
    guard.before_step.append(lambda system: (_ for _ in ()).throw(RuntimeError(f"boom {guard.recoveries}")))
    for _ in range(70):
        assert guard.step({}) is None
    assert guard.recoveries == 70 and len(guard.events) == 64
    assert "boom 69" in guard.events[-1]["reason"] and "boom 6" in guard.events[0]["reason"]


def test_stasis_from_the_very_first_check_waits_for_its_patience(system):
    guard = TrainingGuard(system, GuardSettings(stasis_patience=2, stasis_threshold=0.01))
    params = {**defaults(system.param_specs()), "noise": 0.0}
    with torch.no_grad():  # collapsed before the first check
        for g in system.generators:
            for p in g.parameters():
                p.zero_()
    first = guard.check_stasis(params)
    assert first["stasis"] is False and guard.low_checks == 1
    assert guard.check_stasis(params)["stasis"] is True and guard.stasis_events == 1


def test_the_backed_off_rate_is_folded_into_the_steps_parameters(system):
    guard = TrainingGuard(system, GuardSettings())
    default = {s.name: s for s in system.param_specs()}["learning_rate"].default
    assert guard.scaled({}) == {} and guard.scaled({"learning_rate": 2.0}) == {"learning_rate": 2.0}
    guard.lr_scale = 0.5
    assert guard.scaled({"learning_rate": 2.0, "noise": 0.3}) == {"learning_rate": 1.0, "noise": 0.3}
    assert guard.scaled({}) == {"learning_rate": default * 0.5}


class Recording(Hidden):
    """Hidden, remembering the parameters each step was given."""

    def __init__(self):
        super().__init__()
        self.given = []

    def step(self, params):
        self.given.append(params)
        return super().step(params)


def test_a_disabled_guard_still_runs_its_hooks_and_passes_the_parameters_on():
    s = Recording()
    guard = TrainingGuard(s, GuardSettings(enabled=False))
    seen = []
    guard.before_step.append(seen.append)
    assert guard.step({"x": 1.0}) is not None
    assert seen == [s] and s.given == [{"x": 1.0}]


def test_failures_in_a_row_restart_from_zero_after_a_good_step():
    s = Hidden()
    guard = TrainingGuard(s, GuardSettings(max_failures=2))
    boom = [True]

    def hook(system):
        if boom[0]:
            raise RuntimeError("boom")

    guard.before_step.append(hook)
    assert guard.step({}) is None and guard.failures == 1
    boom[0] = False
    assert guard.step({}) is not None and guard.failures == 0
    boom[0] = True
    assert guard.step({}) is None and guard.stopped is None  # one in a row again, not two
    assert guard.exceptions == 2


def test_a_raising_step_is_logged_with_its_traceback_and_its_reason_cut_to_200_characters(caplog):
    guard = TrainingGuard(Hidden(), GuardSettings(max_failures=10))
    guard.before_step.append(lambda system: (_ for _ in ()).throw(RuntimeError("x" * 500)))
    caplog.set_level("WARNING", logger="unstable.guard")
    assert guard.step({}) is None
    raised = [r for r in caplog.records if r.getMessage() == "hidden: training step raised"]
    assert len(raised) == 1 and raised[0].exc_info is not None and raised[0].exc_info[0] is RuntimeError
    assert guard.last_reason == "step raised RuntimeError: " + "x" * 200


def test_check_without_gradients_and_with_a_non_finite_one():
    s = Hidden()
    guard = TrainingGuard(s, GuardSettings())
    assert guard.check(None) is None  # no step yet: no gradients at all
    guard.step({})
    net = s.modules()["net"]
    net.weight.grad[0, 0] = float("nan")
    assert guard.check({}) == "non-finite gradient"


def test_the_gradient_limit_is_strict_and_zero_means_none():
    s = Hidden()
    guard = TrainingGuard(s, GuardSettings(max_grad_norm=5.0))
    guard.step({})
    net = s.modules()["net"]
    net.weight.grad.zero_()
    net.bias.grad.copy_(torch.tensor([3.0, 4.0, 0.0]))  # total gradient norm exactly 5
    assert guard.check({}) is None
    guard.settings = GuardSettings(max_grad_norm=4.99)
    assert guard.check({}) == "gradient norm 5 > 4.99"
    net.bias.grad.mul_(1e6)
    guard.settings = GuardSettings(max_grad_norm=0)
    assert guard.check({}) is None


def test_the_weight_growth_limit_is_strict_and_zero_means_none():
    s = Hidden()
    guard = TrainingGuard(s, GuardSettings(max_weight_growth=2.0))
    guard.step({})  # the weight norm after a good step is the reference
    net = s.modules()["net"]
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)  # exactly twice the norm: a power of two scales it exactly
        for p in net.parameters():
            p.grad.zero_()
    assert guard.check({}) is None
    guard.settings = GuardSettings(max_weight_growth=1.5)
    assert guard.check({}) == "weight norm grew x2 in one step (> x1.5)"
    guard.settings = GuardSettings(max_weight_growth=1.0)
    assert guard.check({}) == "weight norm grew x2 in one step (> x1)"
    guard.settings = GuardSettings(max_weight_growth=0)
    assert guard.check({}) is None


def test_the_rate_creeps_back_only_after_a_backoff(caplog):
    caplog.set_level("INFO", logger="unstable.guard")
    guard = TrainingGuard(Hidden(), GuardSettings(recover_steps=2))
    for _ in range(6):
        guard.step({})
    assert guard.lr_scale == 1.0 and not [r for r in caplog.records if "learning rate back" in r.getMessage()]


def test_an_undone_step_and_a_stop_are_logged_and_recorded_as_they_happened(caplog):
    caplog.set_level("WARNING", logger="unstable.guard")
    s = Hidden()
    guard = TrainingGuard(s, GuardSettings(good_every=1, max_failures=2))
    guard.step({})
    guard.before_step.append(lambda system: (_ for _ in ()).throw(RuntimeError("boom")))
    assert guard.step({}) is None
    assert list(guard.events) == [{"step": 1, "reason": "step raised RuntimeError: boom", "lr_scale": 0.5}]
    assert guard.step({}) is None and guard.stopped
    lines = [r.getMessage() for r in caplog.records if r.name == "unstable.guard"]
    assert "hidden: step 1 undone (step raised RuntimeError: boom): back to step 1, learning rate x0.5 (was x1)" in lines
    assert ("hidden: 2 failed steps in a row, the last: step raised RuntimeError: boom: training stops, the display "
            "keeps the last good frames") in lines

    def broken(state):
        raise RuntimeError("disk gone")

    caplog.clear()
    guard.retry()
    s.load_state_dict = broken
    assert guard.step({}) is None
    assert ("hidden: step raised RuntimeError: boom; restoring the last good state failed: RuntimeError: disk gone: "
            "training stops") in [r.getMessage() for r in caplog.records]


class Pictures(Hidden):
    """Hidden whose pictures are set by the test: `base` [3, 2, 2] plus `spread` x each latent's first value."""

    def __init__(self):
        super().__init__()
        self.base = torch.tensor([0.2, 0.5, 0.9]).reshape(3, 1, 1).expand(3, 2, 2).clone()
        self.base[:, 0, 0] = 0.0  # an image that is not flat
        self.spread = 0.0

    def sample(self, latents, params):
        return {k: self.base[None] + self.spread * z[:, :1, None, None] for k, z in latents.items()}


def test_stasis_measures_differences_between_latents_from_fixed_probes(caplog):
    s = Pictures()
    guard = TrainingGuard(s, GuardSettings(stasis_patience=2, stasis_threshold=0.01))
    first = guard.check_stasis({})
    # Identical pictures for every latent: no variety at all, however varied each picture is.
    assert first == {"variety": 0.0, "motion": None, "stasis": False, "perturbed": False}
    caplog.set_level("WARNING", logger="unstable.guard")
    second = guard.check_stasis({})
    assert second["stasis"] is True and second["motion"] == 0.0  # nothing moved between the checks
    assert "hidden: stasis: output variety 0 < 0.01 for 2 checks" in [r.getMessage() for r in caplog.records]
    s.spread = 0.5
    lively = guard.check_stasis({})
    assert lively["stasis"] is False and lively["variety"] > 0.01 and guard.low_checks == 0
    # The probes are seeded: another guard measures the very same variety.
    other = TrainingGuard(s, GuardSettings())
    assert other.check_stasis({})["variety"] == lively["variety"]
    # The threshold is strict: a variety equal to it is not low.
    guard.settings = GuardSettings(stasis_patience=2, stasis_threshold=lively["variety"])
    assert guard.check_stasis({})["variety"] == lively["variety"] and guard.low_checks == 0
    # A second episode counts again.
    s.spread = 0.0
    guard.settings = GuardSettings(stasis_patience=2, stasis_threshold=0.01)
    guard.check_stasis({})
    assert guard.check_stasis({})["stasis"] is True and guard.stasis_events == 2


def test_a_perturbation_gets_its_patience_before_the_next(monkeypatch):
    s = Pictures()
    guard = TrainingGuard(s, GuardSettings(stasis_patience=2, stasis_threshold=0.01, stasis_response="perturb"))
    guard.check_stasis({})
    assert guard.check_stasis({})["perturbed"] is True and guard.perturbations == 1 and guard.low_checks == 0
    assert guard.check_stasis({})["perturbed"] is False and guard.perturbations == 1  # one low check: waits
    assert guard.check_stasis({})["perturbed"] is True and guard.perturbations == 2


def test_a_system_without_panels_reads_as_without_variety():
    s = Hidden()
    s.panels = lambda: {}
    s.sample = lambda latents, params: {}
    report = TrainingGuard(s, GuardSettings()).check_stasis({})
    assert report["variety"] == 0.0 and report["motion"] is None


def test_a_stopped_guard_is_due_to_retry_once_retry_after_has_passed(monkeypatch):
    import unstable.guard as guard_module
    clock = [100.0]
    monkeypatch.setattr(guard_module.time, "monotonic", lambda: clock[0])
    guard = TrainingGuard(Hidden(), GuardSettings(max_failures=1, retry_after=60.0))
    guard.before_step.append(lambda system: (_ for _ in ()).throw(RuntimeError("boom")))
    assert guard.step({}) is None and guard.stopped
    clock[0] = 159.5
    assert not guard.retry_due()
    clock[0] = 160.0  # exactly retry_after later
    assert guard.retry_due()
