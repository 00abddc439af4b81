"""The keeper brings a system pushed into stasis back into the band, and one pushed toward
explosion back down, in a bounded number of steps; without it both stay where they were pushed.
Real training steps of a tiny piece (16 px) under a real TrainingGuard."""

from __future__ import annotations

import random

import pytest
import torch

from helpers import tiny_eq_piece
from unstable.explore.keeper import Keeper, keep_training
from unstable.keeper_settings import KeeperSettings
from unstable.guard import GuardSettings, TrainingGuard
from unstable.schema import defaults
from unstable.system import build_system, load_piece

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PIECE = tiny_eq_piece("steps = 1", name="keeper-tiny", seed=3, resolution=16)


def system(tmp_path):
    path = tmp_path / "keeper.toml"
    path.write_text(PIECE)
    torch.manual_seed(0)
    return build_system(load_piece(path), torch.device("cpu"))


@pytest.mark.parametrize("kept", [True, False])
def test_stasis_is_brought_back_into_the_band(tmp_path, kept):
    s = system(tmp_path)
    params = defaults(s.param_specs())
    params["learning_rate"] = 0.01  # pushed into stasis: the lowest rate, the images barely move
    keeper = Keeper(s, KeeperSettings(on=kept, every=5, stasis_floor=0.005, raise_by=2.0))
    looks = []
    keep_training(s, TrainingGuard(s), keeper, params, 60, on_look=looks.append)
    moving = [look["step"] for look in looks if look["motion"] is not None and look["motion"] >= 0.005]
    if kept:
        assert moving and moving[0] <= 40  # back in the band within 8 looks
        assert params["learning_rate"] > 0.01
        assert all("stasis near" in line and "learning_rate" in line for line in keeper.adjustments)
        assert len(keeper.adjustments) == sum(1 for look in looks[:-1] if look["motion"] is not None
                                              and look["motion"] < 0.005)  # one line per adjustment
    else:
        assert not moving and params["learning_rate"] == 0.01 and keeper.adjustments == []


@pytest.mark.parametrize("kept", [True, False])
def test_explosion_is_brought_back_down(tmp_path, kept):
    s = system(tmp_path)
    params = defaults(s.param_specs())
    params["learning_rate"] = 8.0  # pushed toward explosion
    # Too high a rate breaks the weights: above 2x the piece's rate, half the steps go non-finite.
    rng = random.Random(0)
    base_lr = s.piece.generator.optim.lr

    def breaks_when_too_fast(sys_):
        if sys_.opt_g.param_groups[0]["lr"] > 2 * base_lr * 1.0001 and rng.random() < 0.5:
            with torch.no_grad():
                next(sys_.generators[0].parameters()).fill_(float("nan"))

    # The guard alone backs off and creeps back (recover_steps): the trips come back again and again.
    guard = TrainingGuard(s, GuardSettings(recover_steps=3, max_failures=1000))
    guard.before_step.append(breaks_when_too_fast)
    keeper = Keeper(s, KeeperSettings(on=kept, every=5, max_guard=0.1, lower_by=0.5, stasis_floor=0.0))
    looks = []
    keep_training(s, guard, keeper, params, 60, on_look=looks.append)
    late = sum(look["undone"] for look in looks[-4:])  # the last 20 steps
    if kept:
        assert params["learning_rate"] <= 2.0
        assert late == 0
        assert all("explosion near" in line for line in keeper.adjustments) and keeper.adjustments
    else:
        assert params["learning_rate"] == 8.0 and late > 0
