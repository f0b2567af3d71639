"""The tabular model's linear solver: sparse elimination against dense LAPACK, one system
against a stack of systems (bit for bit), on maps with and without a dense root."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.model import StackedTabularModel, TabularModel


def _model(size: int) -> TabularModel:
    return gym.make("BiLevel/FourRooms-v0", size=size).unwrapped.tabular_model()


MODELS = {size: _model(size) for size in (13, 15)}


def _policy(rng: np.random.Generator, model: TabularModel, concentration: float) -> np.ndarray:
    return rng.dirichlet(np.full(model.n_actions, concentration), size=model.n_states)


@settings(max_examples=25, deadline=None)
@given(size=st.sampled_from(sorted(MODELS)), seed=st.integers(0, 2**32 - 1),
       gamma=st.floats(0.0, 0.999), concentration=st.sampled_from([0.05, 1.0, 20.0]),
       transpose=st.booleans())
def test_elimination_solve_is_the_dense_solve(size, seed, gamma, concentration, transpose):
    model = MODELS[size]
    assert model.operators is not None  # the elimination solver serves these maps
    rng = np.random.default_rng(seed)
    policy = _policy(rng, model, concentration)
    rhs = rng.normal(size=model.n_states)
    P = model.policy_transition(policy)
    A = np.eye(model.n_states) - gamma * P.toarray()
    expected = np.linalg.solve(A.T if transpose else A, rhs)
    x = model.solve_discounted(P, rhs, gamma, transpose=transpose)
    np.testing.assert_allclose(x, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize("size", sorted(MODELS))
@pytest.mark.parametrize("transpose", [False, True])
def test_one_system_has_the_bits_of_its_column_in_a_stack(size, transpose):
    """One system takes its own code path (1-D arrays, one ``ufunc.at`` per level); a stack
    takes the round-by-round path. Both subtract the same terms in the same order."""
    model = MODELS[size]
    rng = np.random.default_rng(size)
    policies = np.stack([_policy(rng, model, 1.0) for _ in range(3)])
    rhs = rng.normal(size=(3, model.n_states))
    stack = StackedTabularModel(model, np.zeros((3,) + model.r_follower.shape),
                                np.zeros((3,) + model.r_follower.shape))
    stacked = stack.solve_discounted(stack.policy_transition(policies), rhs, 0.97,
                                     transpose=transpose)
    for run in range(3):
        single = model.solve_discounted(model.policy_transition(policies[run]), rhs[run], 0.97,
                                        transpose=transpose)
        assert np.array_equal(single, stacked[run])


def test_the_plans_cover_a_dense_root_and_levels():
    """The two maps exercise both parts of the schedule: sparse levels and a dense root."""
    for model in MODELS.values():
        plan = model.operators.plan
        assert len(plan.levels) >= 2 and plan.root_level["m"] >= 2


def test_building_the_operators_leaves_the_models_matrix_as_it_was():
    """The continuation matrix is in canonical (sorted) index order from construction, so the
    elimination operators built on first use do not reorder it under products already taken
    (a model's first computations and later ones sum in the same order: same bits)."""
    model = gym.make("BiLevel/ContextualFourRooms-v0").unwrapped.tabular_model()
    before = model.cont.indices.copy()
    assert model.cont.has_sorted_indices
    assert model.operators is not None
    np.testing.assert_array_equal(model.cont.indices, before)
