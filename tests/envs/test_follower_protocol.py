"""One conformance test for every follower kind × problem it applies to (the follower protocol).

For each follower spec (``bilevel_envs.followers.make_follower``) on each problem family, the
test checks: the protocol members, ``act`` shapes/dtypes inside the action space, published
values (an array of the right shape or "not published": ``NotPublishedError`` from the
wrapper), reproducibility under seeds, and an exact state round trip through the wrapper
(snapshot → continue → restore → continue again: identical, also after pickling).
"""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401
from bilevel_envs.followers import Follower, NotPublishedError, make_follower, published
from bilevel_envs.followers.base import PUBLISHED_NAMES
from bilevel_envs.games import lqr_game_v0, toy_game_v0
from bilevel_envs.wrappers import best_response

SB3_FR = {  # tiny budgets: a few dozen SB3 steps per leader update
    "sb3-dqn": "sb3:DQN:learning_starts=0,steps=48,buffer_size=1000,batch_size=16",
    "sb3-ppo": "sb3:PPO:n_steps=32,batch_size=32,n_epochs=2,steps=32",
}
PROBLEMS = {
    # name: (factory, beta, follower specs)
    "four_rooms": (lambda: gym.make("BiLevel/FourRooms-v0"), 0.05,
                   ["exact", "kstep:3", "kstep:3:reset", "kstep:3:reset:form=official",
                    "soft-q-learning:steps=300", "soft-q-learning:steps=300,publish=false",
                    "soft-dqn:steps=100,learning_starts=50,batch_size=16,n_envs=5",
                    SB3_FR["sb3-dqn"], SB3_FR["sb3-ppo"]]),
    "building": (lambda: gym.make("BiLevel/BuildingThermal-v0"), 0.1,
                 ["exact", "kstep:3", "kstep:3:reset",
                  "sb3:SAC:learning_starts=16,steps=24,batch_size=16,buffer_size=1000"]),
    "toy_game": (lambda: toy_game_v0.env(reward=2), 0.05,
                 ["exact", "exact:bootstrap=official", "kstep:5", "kstep:5:reset",
                  "soft-q-learning:steps=300,epsilon=0.2",
                  "soft-q-learning:steps=300,publish=false"]),
    "lqr_game": (lambda: lqr_game_v0.env(), 0.1, ["exact"]),
}
CASES = [pytest.param(name, spec, id=f"{name}-{spec.split(',')[0]}")
         for name, (_, _, specs) in PROBLEMS.items() for spec in specs]


def _thetas(br, rng, n):
    """``n`` θ in the config space (small, so the LQR game stays stabilisable)."""
    d = br.config_space.shape[0]
    scale = 0.3 if br.problem.__class__.__name__.startswith("LQR") else 1.0
    return [np.clip(scale * rng.normal(0, 1, d), br.config_space.low, br.config_space.high)
            for _ in range(n)]


def _observations(br, n, rng):
    """A batch of follower observations and the follower's action space."""
    prob = br.problem
    if hasattr(br, "set_leader_policy"):  # a game: the follower sees (s, a)
        s = np.asarray(prob.initial_states(n))
        if hasattr(prob, "model"):
            s = rng.integers(prob.n_states, size=n)
        a = br.sample_leader_actions(prob.leader_obs(s), rng)
        return prob.follower_obs(s, a), prob.action_space("follower")
    if hasattr(prob, "n_states"):
        return rng.integers(prob.n_states, size=n), prob.action_space
    return prob.sample_initial_states(n, rng), prob.action_space


def _build(name, spec, seed=0):
    factory, beta, _ = PROBLEMS[name]
    if spec.startswith("sb3"):
        pytest.importorskip("stable_baselines3")
    problem = factory()
    follower = make_follower(spec, problem, beta, seed=seed)
    return best_response(problem, beta, follower=follower), follower, beta


def _trace(br, thetas):
    """Everything observable after a few leader updates: rollouts and published values."""
    out = []
    for i, theta in enumerate(thetas):
        br.set_config(theta)
        batch = br.rollout(2, seed=i) if hasattr(br, "set_leader_policy") else br.rollout(
            40, 2, seed=i)
        out.extend(np.asarray(x, dtype=np.float64) for x in batch)
        for name in PUBLISHED_NAMES:
            value = published(br.follower, name)
            if isinstance(value, np.ndarray):
                out.append(value.copy())
        obs, _ = _observations(br, 8, np.random.default_rng(100 + i))
        out.append(np.asarray(br.follower.act(obs, np.random.default_rng(7)), np.float64))
    return out


def _same(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
                                    for x, y in zip(a, b))


@pytest.mark.parametrize("name, spec", CASES)
def test_follower_conformance(name, spec):
    br, follower, beta = _build(name, spec)
    # --- protocol members
    assert isinstance(follower, Follower)
    assert follower.beta == beta
    # --- act: shapes, dtypes, inside the action space, reproducible under a seed
    obs, space = _observations(br, 16, np.random.default_rng(1))
    a1 = np.asarray(follower.act(obs, np.random.default_rng(3)))
    a2 = np.asarray(follower.act(obs, np.random.default_rng(3)))
    np.testing.assert_array_equal(a1, a2)
    assert a1.shape == (16,) + space.shape
    if isinstance(space, gym.spaces.Discrete):
        assert a1.dtype == np.int64 and np.all((a1 >= 0) & (a1 < space.n))
    else:
        assert np.issubdtype(a1.dtype, np.floating) and np.all(np.isfinite(a1))
        if spec.startswith("sb3"):  # SAC's squashed actions stay inside the box
            assert np.all((a1 >= space.low) & (a1 <= space.high))
    # --- published values: an array of the right shape, a callable, or not published
    for pname in PUBLISHED_NAMES:
        value = published(follower, pname)
        if value is None:
            with pytest.raises(NotPublishedError, match=f"does not publish {pname}"):
                getattr(br, pname)
            assert getattr(br, pname, None) is None and not hasattr(br, pname)
            continue
        assert getattr(br, pname) is value or callable(value)
        if isinstance(value, np.ndarray):
            prob = br.problem
            shape = ((prob.n_states, prob.n_leader_actions, prob.n_follower_actions)
                     if hasattr(prob, "n_leader_actions") else (prob.n_states, prob.n_actions))
            expected = {"policy": shape, "soft_q": shape, "soft_v": shape[:-1]}[pname]
            assert value.shape == expected and np.all(np.isfinite(value))
            if pname == "policy":
                np.testing.assert_allclose(value.sum(axis=-1), 1.0, atol=1e-12)
                assert np.all(value >= 0)
    # --- deterministic under seeds: a second, identically seeded follower gives the same trace
    thetas = _thetas(br, np.random.default_rng(5), 2)
    br_twin, _, _ = _build(name, spec)
    first = _trace(br, thetas)
    assert _same(first, _trace(br_twin, thetas))
    # --- exact state round trip through the wrapper (and through pickle)
    np_state, np_draw = np.random.get_state(), None
    snap = pickle.loads(pickle.dumps(br.state_dict()))
    cont = _trace(br, thetas[::-1])
    br.load_state_dict(snap)
    again = _trace(br, thetas[::-1])
    assert _same(cont, again)
    # the follower never moves the caller's global numpy stream (SB3 runs on private states)
    np_draw = np.random.get_state()
    assert np_state[0] == np_draw[0] and np.array_equal(np_state[1], np_draw[1]) \
        and np_state[2] == np_draw[2]


def test_every_kind_is_covered():
    """The conformance cases cover every spec kind on every problem family it applies to."""
    from bilevel_envs.followers.specs import ALLOWED_KINDS, problem_family

    covered = {(problem_family(PROBLEMS[n][0]()), s.split(":")[0]) for n, s in
               ((p.values[0], p.values[1]) for p in CASES)}
    for family, kinds in ALLOWED_KINDS.items():
        if family == "other":  # no registered problem of this family has a θ-only follower
            continue
        for kind in kinds:
            assert (family, kind) in covered, (family, kind)
