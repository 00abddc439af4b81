"""Every kind of System speaks the whole protocol (unstable.system.System), its instruments (bends,
latent directions, their refreshes and actions) and its memory estimate included: the drivers call
these, they do not probe for them. The instruments are one shared implementation
(unstable.instruments), so both kinds answer alike."""

from __future__ import annotations

import pytest
import torch

from unstable.errors import UnstableError
from unstable.show_systems import piece_actions
from unstable.system import KINDS, System, build_system, load_piece, piece_from_dict

EQ = {
    "name": "eq", "kind": "equilibrium", "seed": 3,
    "generator": {"resolution": 16, "start_resolution": 16, "z_dim": 8, "w_dim": 8, "mapping_layers": 2,
                  "channel_base": 64, "min_channels": 4, "max_channels": 8, "optim": {"batch": 4}},
    "critic": {"embedding_dim": 8, "channel_base": 64, "min_channels": 4, "max_channels": 8, "optim": {"batch": 4}},
}
BAD = {"name": "bad", "kind": "divergence", "seed": 1, "vae": {"hidden": 64}, "classifier": {"width": 8}}
DIRECTIONS = {"count": 2, "samples": 200}
CLUSTER_BEND = {"op": "scale", "channels": "cluster", "clusters": 2, "cluster": 0}
LAYER = {"equilibrium": "b8.0", "divergence": "c14"}


def system(base: dict, **over):
    torch.manual_seed(0)
    return build_system(piece_from_dict({**base, **over}, f"{base['name']}.toml"), torch.device("cpu"))


def protocol_members() -> list[str]:
    """The names the System protocol declares: its attributes and its methods."""
    methods = [n for n, v in vars(System).items() if not n.startswith("_") and (callable(v) or isinstance(v, staticmethod))]
    return sorted(set(System.__annotations__) | set(methods))


@pytest.mark.parametrize("base", [EQ, BAD], ids=["equilibrium", "divergence"])
def test_every_kind_has_every_member_the_protocol_declares(base):
    members = protocol_members()
    # The instruments and the memory estimate are part of the contract, not optional extras.
    assert {"actions", "refresh", "defer_computations", "recompute", "training_bytes", "shard"} <= set(members)
    s = system(base)
    missing = [m for m in members if not hasattr(s, m)]
    assert not missing, f"{base['kind']} lacks {missing}"
    _, _, cls_name = KINDS[base["kind"]]
    assert type(s).__name__ == cls_name
    estimate = type(s).training_bytes(s.piece)
    assert estimate is None or (isinstance(estimate, int) and estimate > 0)


@pytest.mark.parametrize("base", [EQ, BAD], ids=["equilibrium", "divergence"])
def test_actions_come_from_the_systems_own_instruments(base):
    layer = LAYER[base["kind"]]
    plain = system(base)
    directed = system(base, directions=DIRECTIONS)
    clustered = system(base, bend=[{"layer": layer, **CLUSTER_BEND}])
    everything = system(base, directions=DIRECTIONS, bend=[{"layer": layer, **CLUSTER_BEND}])
    unclustered = system(base, bend=[{"layer": layer, "op": "scale"}])  # a bend on all channels: nothing to refresh
    assert plain.actions() == [] and unclustered.actions() == []
    assert directed.actions() == ["directions/refresh"]
    assert clustered.actions() == ["clusters/refresh"]
    assert everything.actions() == ["directions/refresh", "clusters/refresh"]
    systems = {"a": plain, "b": directed, "c": everything}
    assert piece_actions(systems) == {"b": ["directions/refresh"], "c": ["directions/refresh", "clusters/refresh"]}


@pytest.mark.parametrize("base", [EQ, BAD], ids=["equilibrium", "divergence"])
def test_an_unknown_refresh_is_one_clear_error_naming_what_exists(base):
    s = system(base, directions=DIRECTIONS)
    for call in (lambda: s.refresh("colours"), lambda: s.recompute("colours", {})):
        with pytest.raises(KeyError, match="'colours'.*'directions' or 'clusters'"):
            call()


@pytest.mark.parametrize("base", [EQ, BAD], ids=["equilibrium", "divergence"])
def test_both_kinds_defer_and_recompute_their_instruments_alike(base):
    """The shared instruments: deferred, a sample asks instead of computing and draws unbent and
    unsteered; the recomputed result, installed, gives the images an offline sample gives."""
    layer = LAYER[base["kind"]]
    over = {"directions": DIRECTIONS, "bend": [{"layer": layer, **CLUSTER_BEND}]}
    offline, live = system(base, **over), system(base, **over)
    dim = next(iter(offline.panels().values()))
    z = {p: torch.randn(3, dim, generator=torch.Generator().manual_seed(7)) for p in offline.panels()}
    params = {"dir0": 1.5, "bend0_scale": 1.0}
    expected, plain = offline.sample(z, params), offline.sample(z, {})
    asked: list[str] = []
    live.defer_computations(asked.append)
    assert sorted(asked) == ["clusters", "directions"]
    got = live.sample(z, params)
    assert all(torch.equal(got[p], plain[p]) for p in got)
    twin = live.sampling_copy()  # off the render thread, on a snapshot; installed into the shared instruments
    twin.recompute("directions", params)()
    twin.recompute("clusters", params)()
    got = live.sample(z, params)
    assert all(torch.equal(got[p], expected[p]) for p in got)


def test_a_piece_too_big_for_the_machine_is_refused_before_anything_is_built(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_text('name = "huge"\nkind = "equilibrium"\nseed = 0\n'
                    '[generator]\nresolution = 1024\nchannel_base = 32768\nmax_channels = 512\n'
                    '[generator.optim]\nbatch = 1024\n[ensemble]\ngenerators = 8\n')
    with pytest.raises(UnstableError, match=r"huge\.toml: its networks need about [0-9.]+ GiB to train") as e:
        build_system(load_piece(path), torch.device("cpu"), source=str(path))
    assert "\n" not in str(e.value)
