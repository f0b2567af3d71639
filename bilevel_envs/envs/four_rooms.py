"""Four-Rooms incentive design (paper §5.1 and App. C.2; Thoma et al. 2024), with contexts.

## Description
A follower walks a four-rooms grid from S to the goal G. The leader places a negative
incentive (penalty) in cells to steer the follower past its target cell T, paying for the
incentive budget whenever the follower reaches G.

With ``goals=[G_1, ..., G_K]`` (K ≥ 2) the env is the *contextual* Four-Rooms of HPGD
(Thoma et al., NeurIPS 2024, "Contextual Bilevel RL for Incentive Alignment"): the context
ξ = k is the goal the follower is paid for. ``BiLevel/ContextualFourRooms-v0`` registers
HPGD's task: goals (1, 9) and (11, 11), S = (4, 1), T = (8, 4).

## Leader Parameter θ
``θ ∈ R^{n_cells+1}`` (105 on the paper's map), logits of a softmax over the cells plus one
unused slot, shared by all contexts: ``inc_θ(k, c) = −0.2 · softmax(θ)_c`` for every cell
``c ≠ G_k`` and 0 on the *current* goal ``G_k`` only (another context's goal cell keeps its
incentive). ``config_space`` is ``Box(-1e3, 1e3)``.

## Action Space
``Discrete(4)``: 0 up, 1 right, 2 down, 3 left. The move is kept w.p. ``1 − slip_prob`` and
replaced by each other move w.p. ``slip_prob / 3`` (paper: slip 1/3). Walls block.

## Observation Space
``Discrete(n_contexts · n_cells)``: the state index ``k · n_cells + c`` (context-major), with
``c`` the row-major rank of the free cell and ``k`` the context (goal) index; with one goal
(the default) simply the cell ``c``. ``obs // n_cells`` is the context, ``obs % n_cells`` the
cell (:meth:`FourRoomsEnv.state_context`, :meth:`FourRoomsEnv.state_cell`).

## Rewards
Rewards are those of the state where the action is taken.
Follower: ``r_F((k, c), b) = 1[c = G_k] + inc_θ(k, c)``. Leader: ``r_L((k, c), b) = 1[c = T] −
λ · 1[c = G_k] · 0.2 · (1 − softmax(θ)_{last})`` (λ = ``penalty_weight``), in
``info["leader_reward"]``. Incentives ignore the action.

## Starting State
S = (4, 1) in the context of the episode: with one goal always S; with K goals, context k
w.p. 1/K (``mu0`` is uniform over the K start states ``k · n_cells + S``), unless
:meth:`FourRoomsEnv.set_context` fixes it. The context never changes within an episode.

## Episode End
The step taken in the current goal pays its reward and terminates. ``gym.make`` adds a
200-step time limit. Exact values are infinite-horizon discounted (γ_F = γ_L = 0.99) with
each context's goal terminal, so the exact objective ``J = Σ_s mu0(s) V_L(s)`` of the
contextual task is ``J = mean_k J_k`` with ``J_k = V_L(start_k)``, exactly HPGD's reported
quantity ``½(J_G1 + J_G2)``.

## Contexts (one per outer iteration)
HPGD draws one context per outer iteration and uses it for every episode and restart of that
iteration. ``env.set_context(k)`` does that: ``sample_initial_states`` (hence ``reset`` and
every episode of ``BestResponse.rollout``, both its code paths) then starts in context ``k``;
``env.set_context(None)`` restores the uniform mixture. The exact model (its ``mu0``), the
follower's policy (one table for all contexts) and ``leader_objective`` never depend on it.
``env.context_mu0(k)`` is context k's start distribution, so the exact per-context objective is
``J_k = context_mu0(k) @ V_L``::

    from bilevel_agents.exact import leader_values
    _, v_l = leader_values(br.problem.tabular_model(), br.policy, br.problem.gamma_leader)
    j_k = br.problem.context_mu0(k) @ v_l

## Arguments
| kwarg | default | meaning |
|---|---|---|
| ``size`` | 13 | map side (odd, 13 ≤ size ≤ 301); 13 is the paper's map (104 cells), 103 has ~10^4 |
| ``goals`` | None | list of goal cells ``(row, col)``, one per context; None = ``[(1, 9)]`` (scaled with ``size``) |
| ``start`` | None | the start cell ``(row, col)`` of every context; None = ``(4, 1)`` (scaled) |
| ``slip_prob`` | 1/3 | probability that the intended move is replaced; 0.44 gives the authors' solver matrix |
| ``simulator_slip_prob`` | None | sample with another slip than the model's (None: the same); the BC-HG authors' code = ``slip_prob=0.44, simulator_slip_prob=1/3``, HPGD's = ``slip_prob=0.44, simulator_slip_prob=0.33`` |
| ``incentive_budget`` | 0.2 | total penalty mass |
| ``penalty_weight`` | 5.0 | λ, the leader's cost per unit of budget used (HPGD's "upper-level regularisation", Table 1: 1, 3, 5) |
| ``render_mode`` | None | ``"ansi"`` or ``"rgb_array"`` |

``BiLevel/ContextualFourRooms-v0`` = ``goals=[[1, 9], [11, 11]], penalty_weight=1.0,
slip_prob=0.44``, 200-step time limit.

## Reference values (contextual task, exact, slip 0.44)
``J = ½(J_G1 + J_G2)`` of ``BiLevel/ContextualFourRooms-v0`` at θ = 0 (HPGD starts from
θ ~ N(0, 0.01²), which moves J by < 2e-3) / with no incentive (θ = 1e3 on the last slot), per
β (rows) and ``penalty_weight`` λ (columns); they match docs/known_optima.md within 1e-3
and are checked by ``python -m pytest tests/envs/test_contextual_four_rooms.py -k known_optima``::

    β       λ = 1              λ = 3              λ = 5
    0.001    0.2882 / 0.4099    0.0133 / 0.4099   −0.2616 / 0.4099
    0.003    0.2000 / 0.3210   −0.0679 / 0.3210   −0.3357 / 0.3210
    0.005    0.1817 / 0.2994   −0.0574 / 0.2994   −0.2966 / 0.2994

## Decisions where the papers and the authors' code differ
* Map: the code's 13×13 map (the right-hand horizontal wall on row 7, door (7, 9)), not Fig. 1.
* Dynamics: one slip model for simulator, solver and evaluation. The BC-HG authors sample
  with slip 1/3 but solve and evaluate with 0.44; ``slip_prob=0.44`` reproduces their solver
  matrix, and ``simulator_slip_prob=1/3`` on top of it their mismatched simulator (for
  reproduction only: the exact objective and hypergradient then describe a problem the
  samples do not come from). HPGD's code does the same with a simulator that keeps the move
  w.p. 0.67 (``simulator_slip_prob=0.33``).
* ``ContextualFourRooms-v0`` defaults to the consistent slip-0.44 model (HPGD's matrix), so
  its exact objective is the quantity of HPGD's Table 1; ``FourRooms-v0`` keeps the BC-HG
  paper's slip 1/3.
* λ: HPGD sweeps λ ∈ {1, …, 5} and publishes 1, 3, 5 with no single default; the contextual id
  registers λ = 1 (Table 1's first column). ``FourRooms-v0`` keeps the BC-HG paper's λ = 5.
* Contexts are part of the state (one MDP with ``n_contexts · n_cells`` states), not two MDPs
  sharing θ; the two formulations have the same per-context values, policies and gradients.
  HPGD observes ``(row, col, goal_row, goal_col)``; we observe the state index.

## Version History
* v0: initial version.

Example:
    >>> import gymnasium as gym, bilevel_envs
    >>> env = gym.make("BiLevel/FourRooms-v0")
    >>> env.unwrapped.config_space.shape
    (105,)
    >>> obs, info = env.reset(seed=0)
    >>> int(obs) == env.unwrapped.start_state
    True
    >>> ctx = gym.make("BiLevel/ContextualFourRooms-v0").unwrapped
    >>> ctx.observation_space, ctx.config_space.shape
    (Discrete(208), (105,))
    >>> ctx.set_context(1)
    >>> ctx.sample_initial_states(3, ctx.np_random).tolist()
    [135, 135, 135]
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import scipy.sparse as sp
import torch

from bilevel_envs.core import ContextualMixin, TabularConfigurableEnv, TabularModel

__all__ = ["FourRoomsEnv", "four_rooms_layout"]

_MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])


def four_rooms_layout(size: int = 13) -> dict[str, Any]:
    """The four-rooms map of side ``size``: wall mask and S, G, T cells, scaled from 13×13.

    On 13×13 it is the authors' map: corridors (3,6), (6,2), (7,9), (10,6); S=(4,1), G=(1,9),
    T=(8,4).
    """
    if not isinstance(size, (int, np.integer)) or size < 13 or size > 301 or size % 2 == 0:
        raise ValueError(f"size must be an odd integer in [13, 301], got {size!r}")
    m = size - 1

    def at(frac: float) -> int:
        return int(round(frac * m / 12))

    wall = np.zeros((size, size), dtype=bool)
    wall[[0, m], :] = wall[:, [0, m]] = True
    mid = m // 2
    wall[:, mid] = True  # vertical wall
    wall[mid, :mid] = True  # left horizontal wall
    wall[mid + 1, mid:] = True  # right horizontal wall (one row lower, as in the authors' map)
    for door in [(at(3), mid), (mid, at(2)), (mid + 1, at(9)), (at(10), mid)]:
        wall[door] = False
    return {"wall": wall, "start": (at(4), 1), "goal": (1, at(9)), "target": (at(8), at(4))}


def _check_cell(name: str, cell: Any, wall: np.ndarray) -> tuple[int, int]:
    """A free cell ``(row, col)`` of the map, or ``ValueError`` naming the argument."""
    ok = isinstance(cell, (tuple, list, np.ndarray)) and len(cell) == 2 and all(
        isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) for x in cell)
    if ok:
        r, c = int(cell[0]), int(cell[1])
        ok = 0 <= r < wall.shape[0] and 0 <= c < wall.shape[1] and not wall[r, c]
    if not ok:
        raise ValueError(f"{name} must be a free cell (row, col) of the {wall.shape[0]}×"
                         f"{wall.shape[1]} map (integers, not a wall), got {cell!r}")
    return r, c


class FourRoomsEnv(ContextualMixin, TabularConfigurableEnv):
    """Four-Rooms configurable MDP (optionally contextual); see the module docstring."""

    config_parameterisation = "softmax"  # θ: the logits of one softmax (module docstring)

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 8}
    #: the follower's temperature of the paper's first experiment (β ∈ {0.001, 0.003, 0.005})
    default_beta = 0.001

    def __init__(self, size: int = 13, slip_prob: float = 1 / 3, incentive_budget: float = 0.2,
                 penalty_weight: float = 5.0, gamma_follower: float = 0.99,
                 gamma_leader: float = 0.99, max_episode_steps: int = 200,
                 render_mode: str | None = None, simulator_slip_prob: float | None = None,
                 goals: Any = None, start: Any = None):
        if simulator_slip_prob is None:
            simulator_slip_prob = slip_prob
        for name, x in (("slip_prob", slip_prob), ("simulator_slip_prob", simulator_slip_prob),
                        ("incentive_budget", incentive_budget),
                        ("penalty_weight", penalty_weight), ("gamma_follower", gamma_follower),
                        ("gamma_leader", gamma_leader)):
            if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.number)) \
                    or not np.isfinite(x):
                raise ValueError(f"{name} must be a finite number, got {x!r}")
        if isinstance(max_episode_steps, (bool, np.bool_)) \
                or not isinstance(max_episode_steps, (int, np.integer)):
            raise ValueError(f"max_episode_steps must be an integer, got {max_episode_steps!r}")
        for name, x in (("slip_prob", slip_prob), ("simulator_slip_prob", simulator_slip_prob)):
            if not 0.0 <= x <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {x!r}")
        if not incentive_budget >= 0.0:
            raise ValueError(f"incentive_budget must be >= 0, got {incentive_budget!r}")
        if not penalty_weight >= 0.0:
            raise ValueError(f"penalty_weight must be >= 0, got {penalty_weight!r}")
        for name, g in (("gamma_follower", gamma_follower), ("gamma_leader", gamma_leader)):
            if not 0.0 <= g < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {g!r}")
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or "
                             f"None, got {render_mode!r}")
        layout = four_rooms_layout(size)
        self.wall = layout["wall"]
        if goals is None:
            goals = [layout["goal"]]
        if isinstance(goals, (str, bytes)) or not hasattr(goals, "__len__") or len(goals) < 1:
            raise ValueError(f"goals must be a non-empty list of free cells (row, col), got "
                             f"{goals!r}")
        goals = tuple(_check_cell(f"goals[{i}]", g, self.wall) for i, g in enumerate(goals))
        if len(set(goals)) != len(goals):
            raise ValueError(f"goals must be distinct cells, got {goals!r}")
        start = layout["start"] if start is None else _check_cell("start", start, self.wall)
        self.size, self.render_mode = size, render_mode
        self.slip_prob, self.incentive_budget = float(slip_prob), float(incentive_budget)
        self.simulator_slip_prob = float(simulator_slip_prob)
        self.penalty_weight = float(penalty_weight)
        self.gamma_follower, self.gamma_leader = float(gamma_follower), float(gamma_leader)
        self.max_episode_steps = int(max_episode_steps)
        self.goals = goals
        self.cells = np.argwhere(~self.wall)  # (n_cells, 2), row-major
        index = -np.ones(self.wall.shape, dtype=np.int64)
        index[tuple(self.cells.T)] = np.arange(len(self.cells))
        self.cell_index = index
        n = self.n_cells = len(self.cells)
        self.n_contexts = K = len(goals)
        self.n_states, self.n_actions = K * n, 4
        offset = n * np.arange(K)
        self.goal_cells = np.array([index[g] for g in goals], dtype=np.int64)
        self.start_cell = int(index[start])
        self.target_cell = int(index[layout["target"]])
        #: per context: the goal, start and target *states* (context-major indices)
        self.goal_states = offset + self.goal_cells
        self.start_states = offset + self.start_cell
        self.target_states = offset + self.target_cell
        # context 0's (the only one by default)
        self.goal_state = int(self.goal_states[0])
        self.start_state = int(self.start_states[0])
        self.target_state = int(self.target_states[0])
        states = np.arange(self.n_states)
        self._state_cell, self._state_context = states % n, states // n
        self._is_goal = self._state_cell == self.goal_cells[self._state_context]
        # move_table[s, a]: state reached by moving a from s (walls block; context kept)
        dest = self.cells[:, None, :] + _MOVES[None]
        blocked = self.wall[dest[..., 0], dest[..., 1]]
        cell_moves = np.where(blocked, np.arange(n)[:, None], index[dest[..., 0], dest[..., 1]])
        self.move_table = (cell_moves[self._state_cell]
                           + (self._state_context * n)[:, None])
        self.terminal = self._is_goal.copy()
        self._transitions = self._build_transitions(self.slip_prob)
        self._sim_transitions = (self._transitions if self.simulator_slip_prob == self.slip_prob
                                 else self._build_transitions(self.simulator_slip_prob))

        self.observation_space = gym.spaces.Discrete(self.n_states)
        self.action_space = gym.spaces.Discrete(4)
        self.config_space = gym.spaces.Box(-1e3, 1e3, shape=(n + 1,), dtype=np.float64)
        self.set_config(self.default_config())

    # ------------------------------------------------------------------ states
    def state_cell(self, states: Any) -> Any:
        """Cell index (row-major rank of the free cell) of state index(es) ``states``."""
        return np.asarray(states) % self.n_cells

    def state_context(self, states: Any) -> Any:
        """Context (goal index) of state index(es) ``states``."""
        return np.asarray(states) // self.n_cells

    def context_mu0(self, context: int | None = None) -> np.ndarray:
        """``(S,)`` start distribution of ``context`` (one-hot at its start state), or of the
        uniform mixture (the model's ``mu0``) for ``None``; ``J_k = context_mu0(k) @ V_L``."""
        mu0 = np.zeros(self.n_states)
        if context is None:
            mu0[self.start_states] = 1.0 / self.n_contexts
        else:
            if isinstance(context, (bool, np.bool_)) or not isinstance(
                    context, (int, np.integer)) or not 0 <= context < self.n_contexts:
                raise ValueError(f"context must be None or an integer in [0, "
                                 f"{self.n_contexts - 1}], got {context!r}")
            mu0[self.start_states[int(context)]] = 1.0
        return mu0

    def current_context(self) -> int:
        """The context shown by ``render``: the current state's, else the set one, else 0."""
        if hasattr(self, "_state"):
            return int(self.state_context(int(self._state)))
        return 0 if self.context is None else self.context

    # ------------------------------------------------------------------ model
    def _build_transitions(self, slip: float) -> sp.csr_array:
        """Sparse ``(S*4, S)`` matrix ``P(s'|s,b) = Σ_{b'} w(b, b') 1[move(s, b') = s']`` with
        ``w = 1 − slip`` on the intended move and ``slip / 3`` on each other."""
        S = self.n_states
        weights = np.full((4, 4), slip / 3.0)
        np.fill_diagonal(weights, 1.0 - slip)
        rows = np.repeat(np.arange(S * 4), 4)  # (s, b) then actual move b'
        cols = self.move_table[np.repeat(np.arange(S), 16), np.tile(np.arange(4), S * 4)]
        vals = np.tile(weights.ravel(), S)
        P = sp.csr_array((vals, (rows, cols)), shape=(S * 4, S))
        P.sum_duplicates()
        return P

    def _incentive_probs(self, theta: np.ndarray) -> np.ndarray:
        """``softmax(θ)`` over the last axis (θ may be a stack ``(N, n_cells + 1)``)."""
        z = np.exp(theta - theta.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    def reward_tables(self, theta: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(r_F, r_L, incentive)`` at θ: ``(..., S, 4)``, ``(..., S, 4)``, ``(..., S)``.

        θ is one parameter or a stack ``(N, n_cells + 1)`` (N runs at once, the same numbers
        as one at a time); it is not validated and the env is not changed.
        """
        p = self._incentive_probs(np.asarray(theta, dtype=np.float64))
        goal = self._is_goal
        inc = np.where(goal, 0.0, -self.incentive_budget * p[..., self._state_cell])
        r_f = np.where(goal, inc + 1.0, inc)
        r_l = np.where(self._state_cell == self.target_cell, 1.0, 0.0)
        r_l = np.where(goal, r_l - self.penalty_weight * self.incentive_budget
                       * (1.0 - p[..., -1:]), r_l)
        r_l = np.broadcast_to(r_l, inc.shape)
        return (np.repeat(r_f[..., None], 4, axis=-1), np.repeat(r_l[..., None], 4, axis=-1),
                inc)

    def _on_config_change(self) -> None:
        self._r_follower, self._r_leader, inc = self.reward_tables(self._config)
        self.incentive = inc  # (S,): the follower's incentive in each state

    def tabular_model(self, theta: Any = None) -> TabularModel:
        """The exact model at ``theta`` (the current config if ``None``; it is not changed);
        ``mu0`` is uniform over the contexts' start states."""
        if theta is not None:
            saved = self._config
            self.set_config(theta)
        cached = getattr(self, "_model_cache", None)
        model = TabularModel(transitions=self._transitions, r_follower=self._r_follower.copy(),
                             r_leader=self._r_leader.copy(), mu0=self.context_mu0(None),
                             terminal=self.terminal.copy(),
                             cont=cached.cont if cached else None,
                             cont3=cached.cont3 if cached else None)
        self._model_cache = model
        if theta is not None:
            self.set_config(saved)
        return model

    def tabular_rewards_torch(self, theta: torch.Tensor):
        """``(r_F, r_L)`` of shape ``(S, 4)`` as differentiable functions of θ."""
        p = torch.softmax(theta, dim=0)
        goal = torch.as_tensor(self._is_goal, dtype=theta.dtype)
        target = torch.as_tensor(self._state_cell == self.target_cell, dtype=theta.dtype)
        cell = torch.as_tensor(self._state_cell)
        inc = -self.incentive_budget * p[cell] * (1.0 - goal)
        r_f = inc + goal
        r_l = target - goal * self.penalty_weight * self.incentive_budget * (1.0 - p[-1])
        return r_f[:, None].expand(-1, 4), r_l[:, None].expand(-1, 4)

    def tabular_rewards_vjp(self, theta, c_follower, c_leader) -> np.ndarray:
        """Closed-form softmax VJP of :meth:`tabular_rewards_torch` (tested against autograd).

        With ``p = softmax(θ)``: ``∂/∂p_c = −κ Σ_{s in cell c, not a goal} Σ_b c_F(s,b)``,
        ``∂/∂p_last = λ κ Σ_{goal states g} Σ_b c_L(g,b)``, and ``∇θ = p ⊙ (e − p·e)``.
        """
        theta = np.asarray(theta, dtype=np.float64)
        c_follower, c_leader = np.asarray(c_follower), np.asarray(c_leader)
        if theta.ndim == 2:
            return self._stacked_rewards_vjp(theta, c_follower, c_leader)
        p = self._incentive_probs(theta)
        e = np.zeros_like(p)
        if self.n_contexts == 1:  # states are cells
            e[: self.n_cells] = -self.incentive_budget * c_follower.sum(axis=1)
            e[self.goal_state] = 0.0
        else:  # a cell's incentive is paid in every context where it is not the goal
            per_state = np.where(self._is_goal, 0.0, c_follower.sum(axis=1))
            e[: self.n_cells] = -self.incentive_budget * np.bincount(
                self._state_cell, weights=per_state, minlength=self.n_cells)
        e[-1] = self.penalty_weight * self.incentive_budget \
            * c_leader[self.goal_states].sum()
        return p * (e - p @ e)

    def _stacked_rewards_vjp(self, theta, c_follower, c_leader) -> np.ndarray:
        """:meth:`tabular_rewards_vjp` of N runs: θ ``(N, d)``, tables ``(N, S, 4)``; row n is
        bit for bit the single-θ result (the same reductions, ``p·e`` by one ``dot`` per run)."""
        p = self._incentive_probs(theta)
        e = np.zeros_like(p)
        n_runs, n = theta.shape[0], self.n_cells
        if self.n_contexts == 1:
            e[:, :n] = -self.incentive_budget * c_follower.sum(axis=-1)
            e[:, self.goal_state] = 0.0
        else:  # one bincount over (run, cell) keys: each run's sums in the single order
            per_state = np.where(self._is_goal, 0.0, c_follower.sum(axis=-1))
            keys = (np.arange(n_runs)[:, None] * n + self._state_cell).ravel()
            e[:, :n] = -self.incentive_budget * np.bincount(
                keys, weights=per_state.ravel(), minlength=n_runs * n).reshape(n_runs, n)
        e[:, -1] = self.penalty_weight * self.incentive_budget \
            * c_leader[:, self.goal_states].reshape(n_runs, -1).sum(axis=-1)
        pe = np.matmul(p[:, None, :], e[:, :, None])[:, :, 0]
        return p * (e - pe)

    # ------------------------------------------------------------------ simulator
    def sample_initial_states(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n,)`` start states: S in the set context, else in uniformly drawn contexts."""
        return self.start_states[self._draw_contexts(n, rng)]

    def sampling_transitions(self) -> sp.csr_array:
        """The matrix of ``simulator_slip_prob`` (the model's own unless it differs)."""
        return self._sim_transitions

    def transition(self, states, actions, rng):
        """Slip rule (``simulator_slip_prob``): keep the move w.p. 1 − slip, else one of the other
        three uniformly."""
        states = np.asarray(states, dtype=np.int64)
        actions = np.asarray(actions, dtype=np.int64)
        nxt, term = self.transition_from_draws(states, actions,
                                               self.transition_draws(states.shape[0], rng))
        return nxt, self._r_follower[states, actions], self._r_leader[states, actions], term

    def transition_draws(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """The random numbers :meth:`transition` draws for ``n`` transitions, in its order."""
        return rng.random(n), rng.integers(1, 4, size=n)

    def transition_from_draws(self, states: np.ndarray, actions: np.ndarray,
                              draws: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``(next_states, terminated)`` of :meth:`transition` given its draws (any shape: e.g.
        the streams of many runs at once, all at their own θ: the dynamics do not depend on θ)."""
        u, shift = draws
        slip = u < self.simulator_slip_prob
        other = (actions + shift) % 4
        actual = np.where(slip, other, actions)
        nxt = self.move_table[states, actual]
        term = self.terminal[states]
        return np.where(term, states, nxt), term

    def state_to_obs(self, state: Any) -> int:
        """The state index ``k · n_cells + c``."""
        return int(state)

    def validate_action(self, action: Any) -> int:
        """An integer move in ``[0, 3]``, or ``ValueError``."""
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)) \
                or not 0 <= int(action) < 4:
            raise ValueError(f"action must be an integer in [0, 3], got {action!r}")
        return int(action)

    # ------------------------------------------------------------------ rendering
    def render(self):
        """``"ansi"``: the text map; ``"rgb_array"``: :meth:`render_rgb` of the incentive."""
        if self.render_mode == "ansi":
            return self._render_ansi()
        if self.render_mode == "rgb_array":
            return self.render_rgb(self.incentive)
        return None

    def _context_block(self, values: np.ndarray, context: int) -> np.ndarray:
        """The cells' rows of a per-state array (per-cell arrays are returned unchanged)."""
        values = np.asarray(values)
        if values.shape[0] == self.n_cells:
            return values
        return values[context * self.n_cells: (context + 1) * self.n_cells]

    def _render_ansi(self) -> str:
        """Text map: walls █, incentive shades, S, T, the current goal G (other goals g), @."""
        shades = " .:-=+*#%&"  # "@" is reserved for the follower
        k = self.current_context()
        inc = self._context_block(self.incentive, k)
        budget = max(self.incentive_budget, 1e-12)
        grid = np.where(self.wall, "█", " ").astype("<U1")
        level = np.clip(-inc / budget * len(shades), 0, len(shades) - 1).astype(int)
        for s, (r, c) in enumerate(self.cells):
            grid[r, c] = shades[level[s]]
        others = [g for j, g in enumerate(self.goal_cells) if j != k]
        marks = [(g, "g") for g in others] + [(self.start_cell, "S"),
                                              (int(self.goal_cells[k]), "G"),
                                              (self.target_cell, "T")]
        for s, ch in marks:
            grid[tuple(self.cells[s])] = ch
        if hasattr(self, "_state"):
            grid[tuple(self.cells[int(self.state_cell(int(self._state)))])] = "@"
        return "\n".join("".join(row) for row in grid) + "\n"

    def render_rgb(self, incentive: np.ndarray, policy: np.ndarray | None = None,
                   cell: int = 16, context: int | None = None) -> np.ndarray:
        """An RGB picture: walls, incentive heat map (red), S/G/T, follower, policy arrows.

        ``incentive`` (and ``policy``) may be per cell or per state; per-state arrays are shown
        for ``context`` (default: :meth:`current_context`), whose goal is drawn dark green
        (other contexts' goals light green).
        """
        k = self.current_context() if context is None else int(context)
        incentive = self._context_block(incentive, k)
        h, w = self.wall.shape
        img = np.full((h * cell, w * cell, 3), 255, dtype=np.uint8)
        heat = np.clip(-incentive / max(self.incentive_budget, 1e-12), 0.0, 1.0) ** 0.5
        colours = np.zeros((h, w, 3))
        colours[self.wall] = (40, 40, 40)
        free = np.stack([np.full_like(heat, 255), 255 * (1 - heat), 255 * (1 - heat)], axis=1)
        colours[tuple(self.cells.T)] = free
        goal = int(self.goal_cells[k])
        marks = [(int(g), (160, 220, 170)) for g in self.goal_cells if g != goal]
        marks += [(self.start_cell, (70, 110, 230)), (goal, (40, 170, 70)),
                  (self.target_cell, (240, 200, 40))]
        for s, col in marks:
            colours[tuple(self.cells[s])] = col
        img[:] = np.kron(colours, np.ones((cell, cell, 1))).astype(np.uint8)
        img[::cell, :, :] = img[:, ::cell, :] = 200  # grid lines
        if policy is not None:
            best = self._context_block(policy, k).argmax(axis=1)
            for s, (r, c) in enumerate(self.cells):
                if s == goal:
                    continue
                cy, cx = r * cell + cell // 2, c * cell + cell // 2
                dy, dx = _MOVES[best[s]]
                for j in range(cell // 3):
                    img[cy + dy * j, cx + dx * j] = (0, 0, 0)
        if hasattr(self, "_state") and self.state_context(int(self._state)) == k:
            r, c = self.cells[int(self.state_cell(int(self._state)))]
            q = cell // 4
            img[r * cell + q: (r + 1) * cell - q, c * cell + q: (c + 1) * cell - q] = (130, 0, 160)
        return img
