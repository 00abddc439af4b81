"""Batch size as the keeper's second lever: the equilibrium system's live `batch_fraction` (as
BAD's), exactly today's maths at 1 and a floor of 2 images a generator below it, and the keeper's
ladder over learning_rate and batch_fraction (and the perturbation), per parameter under the
artist's hold. Real training steps of a tiny piece on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import tiny_eq_piece
from unstable.control.store import ParameterStore
from unstable.equilibrium.schedule import batch_share
from unstable.explore.keeper import Keeper
from unstable.keeper_settings import KeeperSettings
from unstable.live.keeping import LiveKeeper
from unstable.schema import defaults, with_common
from unstable.system import build_system, load_piece

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(tmp_path, seed: int = 3, resolution: int = 8):
    path = tmp_path / "b.toml"
    path.write_text(tiny_eq_piece("steps = 1", name="golden", seed=seed, resolution=resolution))
    torch.manual_seed(0)
    return build_system(load_piece(path), torch.device("cpu"))


# What two steps of this piece gave before batch_fraction existed (the code of commit 5025d9e).
GOLDEN_SCALARS = {
    "critic_loss": 0.8129528164863586, "critic_accuracy": 0.5, "g0_impersonate": 0.9873520135879517,
    "g0_p_target": 0.37405484914779663, "g0_variety": 0.27795693278312683, "g0_loss": 1.0457720756530762,
    "g1_impersonate": 0.42410916090011597, "g1_p_target": 0.6576259136199951, "g1_variety": 0.25483381748199463,
    "g1_loss": 0.5056523084640503}
GOLDEN_GENERATOR_SUMS = [1071.921327322906, 1540.2574775250396]
GOLDEN_CRITIC_ABS_SUM = 2239.0724946144037


def sums(s):
    return ([float(sum(t.double().sum() for t in g.state_dict().values())) for g in s.generators],
            float(sum(t.double().abs().sum() for t in s.critic.state_dict().values())))


@pytest.mark.parametrize("fraction", [None, 1.0])
def test_a_whole_batch_is_exactly_the_maths_before_the_lever(tmp_path, fraction):
    s = tiny(tmp_path)
    params = defaults(s.param_specs())
    assert params["batch_fraction"] == 1.0  # the default: the piece as written
    if fraction is None:
        del params["batch_fraction"]  # a caller that knows nothing of it
    for _ in range(2):
        scalars = s.step(params)
    assert "batch" not in scalars
    for k, v in GOLDEN_SCALARS.items():
        assert scalars[k] == pytest.approx(v, rel=1e-6, abs=1e-7), k
    gens, critic = sums(s)
    assert gens == pytest.approx(GOLDEN_GENERATOR_SUMS, rel=1e-7) and critic == pytest.approx(GOLDEN_CRITIC_ABS_SUM,
                                                                                                rel=1e-7)


def test_the_share_and_its_floor():
    assert batch_share(8, 1.0) == 8 and batch_share(8, 0.5) == 4 and batch_share(8, 0.25) == 2
    assert batch_share(8, 1 / 16) == 2  # round(0.5) would be 0: the floor of 2 images a generator
    assert batch_share(4, 1 / 16) == 2 and batch_share(1, 0.5) == 1  # never more than the piece's batch
    assert batch_share(8, 0.3, world=2) == 2 and batch_share(12, 0.25, world=2) == 4  # 3 -> 4: splits over 2
    assert batch_share(100, 0.3) == 30


def test_a_smaller_batch_trains_on_fewer_images_and_stays_finite(tmp_path):
    s = tiny(tmp_path)
    params = defaults(s.param_specs())
    seen = []
    gen = s.generators[0]
    hook = gen.mapping.register_forward_hook(lambda m, a, out: seen.append(out.shape[0]))
    params["batch_fraction"] = 1 / 16
    scalars = s.step(params)
    hook.remove()
    assert scalars["batch"] == 2.0 and set(seen) == {2}, seen  # the piece's batch is 4: the floor
    assert all(math.isfinite(v) for v in scalars.values()), scalars  # a std over 2 rows is defined
    assert s.step({**params, "batch_fraction": 0.5})["batch"] == 2.0


def test_bad_pieces_keep_their_own_share(tmp_path):
    from test_bad_system import Silent, tiny as tiny_bad  # its base models train in a few steps
    s = build_system(tiny_bad(tmp_path), torch.device("cpu"))
    s.prepare(Silent)
    assert {spec.name for spec in s.param_specs()} >= {"learning_rate", "batch_fraction"}
    keeper = Keeper(s, KeeperSettings(stasis_floor=1.0))
    keeper.observe({"learning_rate": 10.0, "batch_fraction": 1.0}, 0, 5)  # the first look: no motion yet
    s.step({"learning_rate": 1.0, "batch_fraction": 1.0})
    assert keeper.observe({"learning_rate": 10.0, "batch_fraction": 1.0}, 0, 5) == {"batch_fraction": 0.5}


# -- the ladder ------------------------------------------------------------------------------------

def looked(tmp_path, **settings):
    """A keeper of a tiny system that has looked once (so the next look has a motion)."""
    s = tiny(tmp_path, resolution=16)
    perturbed = []
    keeper = Keeper(s, KeeperSettings(**settings), perturb=perturbed.append)
    keeper.observe(defaults(s.param_specs()), 0, 5)
    return s, keeper, perturbed


def test_stasis_climbs_the_ladder_rate_then_batch_then_perturbation(tmp_path):
    # stasis_floor 1: every motion counts as stasis.
    s, keeper, perturbed = looked(tmp_path, stasis_floor=1.0, raise_by=4.0, lower_by=0.25, perturb=0.1)
    params = {"learning_rate": 1.0, "batch_fraction": 1.0}
    moves = []
    for _ in range(6):
        changes = keeper.observe(params, 0, 5)
        assert len(changes) <= 1  # one move a look
        params.update(changes)
        moves.append(changes)
    assert moves == [{"learning_rate": 4.0}, {"learning_rate": 10.0}, {"batch_fraction": 0.25},
                     {"batch_fraction": 1 / 16}, {}, {}]
    assert perturbed == [0.1, 0.1]  # the last rung, once the batch is at its smallest
    lines = keeper.adjustments
    assert len(lines) == 6 and "learning_rate 1 -> 4" in lines[0] and "batch_fraction 1 -> 0.25" in lines[2]
    assert "smallest batch" in lines[4] and "perturbed" in lines[4]


def test_explosion_gives_the_batch_back_first_then_lowers_the_rate(tmp_path):
    s, keeper, _ = looked(tmp_path, stasis_floor=0.0, max_guard=0.1, lower_by=0.5)
    params = {"learning_rate": 4.0, "batch_fraction": 0.25}
    moves = []
    for _ in range(4):
        changes = keeper.observe(params, 3, 5)  # 3 of 5 steps undone: explosion near
        params.update(changes)
        moves.append(changes)
    assert moves == [{"batch_fraction": 0.5}, {"batch_fraction": 1.0}, {"learning_rate": 2.0},
                     {"learning_rate": 1.0}]
    assert all("explosion near (3 of 5 steps undone)" in line for line in keeper.adjustments)


def test_a_held_lever_is_passed_over_not_moved(tmp_path):
    s, keeper, perturbed = looked(tmp_path, stasis_floor=1.0, raise_by=2.0, lower_by=0.5, perturb=0.1)
    params = {"learning_rate": 0.5, "batch_fraction": 1.0}
    # The artist holds the rate: stasis moves the batch instead, never the rate.
    assert keeper.observe(params, 0, 5, held={"learning_rate"}) == {"batch_fraction": 0.5}
    # Both held: nothing moves, and the weights are not perturbed behind the artist's back.
    assert keeper.observe(params, 0, 5, held={"learning_rate", "batch_fraction"}) == {} and perturbed == []
    assert keeper.observe({"learning_rate": 10.0, "batch_fraction": 1 / 16}, 0, 5) == {} and perturbed == [0.1]
    # Explosion with the batch held: the rate comes down.
    assert keeper.observe({"learning_rate": 4.0, "batch_fraction": 0.5}, 5, 5,
                          held={"batch_fraction"}) == {"learning_rate": 2.0}


def test_the_live_keeper_writes_the_batch_into_the_store(tmp_path):
    s = tiny(tmp_path, resolution=16)
    store = ParameterStore({"eq": with_common(s.param_specs())})
    store.set("eq", "learning_rate", 10.0)  # at the top of the rate
    keeper = LiveKeeper("eq", s, KeeperSettings(every=1, stasis_floor=1.0, lower_by=0.5, artist_hold=0.0),
                        store, clock=lambda: 100.0)
    keeper.after_step(False)  # the first look
    assert keeper.after_step(False) == {"batch_fraction": 0.5}
    assert store.get("eq", "batch_fraction") == 0.5 and store.get("eq", "learning_rate") == 10.0
    keeper.close()
