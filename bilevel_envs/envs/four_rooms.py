"""Four-Rooms incentive design (paper §5.1 and App. C.2; Thoma et al. 2024).

## Description
A follower walks a four-rooms grid from S to the goal G. The leader places a negative
incentive (penalty) in cells to steer the follower past its target cell T, paying for the
incentive budget whenever the follower reaches G.

## Leader Parameter θ
``θ ∈ R^{|S|+1}`` (105 on the paper's map), logits of a softmax over the cells plus one unused
slot: ``inc_θ(s) = −0.2 · softmax(θ)_s`` for ``s ≠ G`` and 0 at G. ``config_space`` is
``Box(-1e3, 1e3)``.

## Action Space
``Discrete(4)``: 0 up, 1 right, 2 down, 3 left. The move is kept w.p. ``1 − slip_prob`` and
replaced by each other move w.p. ``slip_prob / 3`` (paper: slip 1/3). Walls block.

## Observation Space
``Discrete(|S|)``: the row-major rank of the free cell.

## Rewards
Rewards are those of the state where the action is taken.
Follower: ``r_F(s, b) = 1[s = G] + inc_θ(s)``. Leader: ``r_L(s, b) = 1[s = T] −
λ · 1[s = G] · 0.2 · (1 − softmax(θ)_{last})`` with λ = 5, in ``info["leader_reward"]``.

## Episode End
The step taken in G pays its reward and terminates. ``gym.make`` adds a 200-step time limit.
Exact values are infinite-horizon discounted (γ_F = γ_L = 0.99) with G terminal.

## Arguments
| kwarg | default | meaning |
|---|---|---|
| ``size`` | 13 | map side (odd, 13 ≤ size ≤ 301); 13 is the paper's map (104 cells), 103 has ~10^4 |
| ``slip_prob`` | 1/3 | probability that the intended move is replaced; 0.44 gives the authors' solver matrix |
| ``simulator_slip_prob`` | None | sample with another slip than the model's (None: the same); the authors' code = ``slip_prob=0.44, simulator_slip_prob=1/3`` |
| ``incentive_budget`` | 0.2 | total penalty mass |
| ``penalty_weight`` | 5.0 | λ, the leader's cost per unit of budget used |
| ``render_mode`` | None | ``"ansi"`` or ``"rgb_array"`` |

## Decisions where the paper and the authors' code differ
* Map: the code's 13×13 map (the right-hand horizontal wall on row 7, door (7, 9)), not Fig. 1.
* Dynamics: one slip model for simulator, solver and evaluation. The authors sample with slip
  1/3 but solve and evaluate with 0.44; ``slip_prob=0.44`` reproduces their solver matrix, and
  ``simulator_slip_prob=1/3`` on top of it their mismatched simulator (for reproduction only:
  the exact objective and hypergradient then describe a problem the samples do not come from).

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
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import scipy.sparse as sp
import torch

from bilevel_envs.core import TabularConfigurableEnv, TabularModel

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


class FourRoomsEnv(TabularConfigurableEnv):
    """Four-Rooms configurable MDP; see the module docstring for the full description."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 8}

    def __init__(self, size: int = 13, slip_prob: float = 1 / 3, incentive_budget: float = 0.2,
                 penalty_weight: float = 5.0, gamma_follower: float = 0.99,
                 gamma_leader: float = 0.99, max_episode_steps: int = 200,
                 render_mode: str | None = None, simulator_slip_prob: float | None = None):
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
        self.size, self.render_mode = size, render_mode
        self.slip_prob, self.incentive_budget = float(slip_prob), float(incentive_budget)
        self.simulator_slip_prob = float(simulator_slip_prob)
        self.penalty_weight = float(penalty_weight)
        self.gamma_follower, self.gamma_leader = float(gamma_follower), float(gamma_leader)
        self.max_episode_steps = int(max_episode_steps)
        self.wall = layout["wall"]
        self.cells = np.argwhere(~self.wall)  # (S, 2), row-major
        index = -np.ones(self.wall.shape, dtype=np.int64)
        index[tuple(self.cells.T)] = np.arange(len(self.cells))
        self.cell_index = index
        self.start_state = int(index[layout["start"]])
        self.goal_state = int(index[layout["goal"]])
        self.target_state = int(index[layout["target"]])
        self.n_states, self.n_actions = len(self.cells), 4
        # move_table[s, a]: cell reached by moving a from s (walls block)
        dest = self.cells[:, None, :] + _MOVES[None]
        blocked = self.wall[dest[..., 0], dest[..., 1]]
        self.move_table = np.where(blocked, np.arange(self.n_states)[:, None],
                                   index[dest[..., 0], dest[..., 1]])
        self.terminal = np.zeros(self.n_states, dtype=bool)
        self.terminal[self.goal_state] = True
        self._transitions = self._build_transitions(self.slip_prob)
        self._sim_transitions = (self._transitions if self.simulator_slip_prob == self.slip_prob
                                 else self._build_transitions(self.simulator_slip_prob))

        self.observation_space = gym.spaces.Discrete(self.n_states)
        self.action_space = gym.spaces.Discrete(4)
        self.config_space = gym.spaces.Box(-1e3, 1e3, shape=(self.n_states + 1,),
                                           dtype=np.float64)
        self.set_config(self.default_config())

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
        z = np.exp(theta - theta.max())
        return z / z.sum()

    def _on_config_change(self) -> None:
        p = self._incentive_probs(self._config)
        inc = -self.incentive_budget * p[: self.n_states]
        inc[self.goal_state] = 0.0
        r_f = inc.copy()
        r_f[self.goal_state] += 1.0
        r_l = np.zeros(self.n_states)
        r_l[self.target_state] += 1.0
        r_l[self.goal_state] -= self.penalty_weight * self.incentive_budget * (1.0 - p[-1])
        self.incentive = inc
        self._r_follower = np.repeat(r_f[:, None], 4, axis=1)
        self._r_leader = np.repeat(r_l[:, None], 4, axis=1)

    def tabular_model(self, theta: Any = None) -> TabularModel:
        if theta is not None:
            saved = self._config
            self.set_config(theta)
        mu0 = np.zeros(self.n_states)
        mu0[self.start_state] = 1.0
        cached = getattr(self, "_model_cache", None)
        model = TabularModel(transitions=self._transitions, r_follower=self._r_follower.copy(),
                             r_leader=self._r_leader.copy(), mu0=mu0,
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
        goal = torch.zeros(self.n_states, dtype=theta.dtype)
        goal[self.goal_state] = 1.0
        target = torch.zeros(self.n_states, dtype=theta.dtype)
        target[self.target_state] = 1.0
        inc = -self.incentive_budget * p[: self.n_states] * (1.0 - goal)
        r_f = inc + goal
        r_l = target - goal * self.penalty_weight * self.incentive_budget * (1.0 - p[-1])
        return r_f[:, None].expand(-1, 4), r_l[:, None].expand(-1, 4)

    def tabular_rewards_vjp(self, theta, c_follower, c_leader) -> np.ndarray:
        """Closed-form softmax VJP of :meth:`tabular_rewards_torch` (tested against autograd).

        With ``p = softmax(θ)``: ``∂/∂p_s = −κ Σ_b c_F(s,b)`` for cells ``s ≠ G``,
        ``∂/∂p_last = λ κ Σ_b c_L(G,b)``, and ``∇θ = p ⊙ (e − p·e)``.
        """
        p = self._incentive_probs(np.asarray(theta, dtype=np.float64))
        e = np.zeros_like(p)
        e[: self.n_states] = -self.incentive_budget * np.asarray(c_follower).sum(axis=1)
        e[self.goal_state] = 0.0
        e[-1] = self.penalty_weight * self.incentive_budget \
            * np.asarray(c_leader)[self.goal_state].sum()
        return p * (e - p @ e)

    # ------------------------------------------------------------------ simulator
    def sample_initial_states(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.full(n, self.start_state, dtype=np.int64)

    def sampling_transitions(self) -> sp.csr_array:
        return self._sim_transitions

    def transition(self, states, actions, rng):
        """Slip rule (``simulator_slip_prob``): keep the move w.p. 1 − slip, else one of the other
        three uniformly."""
        states = np.asarray(states, dtype=np.int64)
        actions = np.asarray(actions, dtype=np.int64)
        n = states.shape[0]
        slip = rng.random(n) < self.simulator_slip_prob
        other = (actions + rng.integers(1, 4, size=n)) % 4
        actual = np.where(slip, other, actions)
        nxt = self.move_table[states, actual]
        term = self.terminal[states]
        nxt = np.where(term, states, nxt)
        return nxt, self._r_follower[states, actions], self._r_leader[states, actions], term

    def state_to_obs(self, state: Any) -> int:
        return int(state)

    def validate_action(self, action: Any) -> int:
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)) \
                or not 0 <= int(action) < 4:
            raise ValueError(f"action must be an integer in [0, 3], got {action!r}")
        return int(action)

    # ------------------------------------------------------------------ rendering
    def render(self):
        if self.render_mode == "ansi":
            return self._render_ansi()
        if self.render_mode == "rgb_array":
            return self.render_rgb(self.incentive)
        return None

    def _render_ansi(self) -> str:
        shades = " .:-=+*#%&"  # "@" is reserved for the follower
        budget = max(self.incentive_budget, 1e-12)
        grid = np.where(self.wall, "█", " ").astype("<U1")
        level = np.clip(-self.incentive / budget * len(shades), 0, len(shades) - 1).astype(int)
        for s, (r, c) in enumerate(self.cells):
            grid[r, c] = shades[level[s]]
        for s, ch in ((self.start_state, "S"), (self.goal_state, "G"),
                      (self.target_state, "T")):
            grid[tuple(self.cells[s])] = ch
        if hasattr(self, "_state"):
            grid[tuple(self.cells[int(self._state)])] = "@"
        return "\n".join("".join(row) for row in grid) + "\n"

    def render_rgb(self, incentive: np.ndarray, policy: np.ndarray | None = None,
                   cell: int = 16) -> np.ndarray:
        """An RGB picture: walls, incentive heat map (red), S/G/T, follower, policy arrows."""
        h, w = self.wall.shape
        img = np.full((h * cell, w * cell, 3), 255, dtype=np.uint8)
        heat = np.clip(-incentive / max(self.incentive_budget, 1e-12), 0.0, 1.0) ** 0.5
        colours = np.zeros((h, w, 3))
        colours[self.wall] = (40, 40, 40)
        free = np.stack([np.full_like(heat, 255), 255 * (1 - heat), 255 * (1 - heat)], axis=1)
        colours[tuple(self.cells.T)] = free
        for s, col in ((self.start_state, (70, 110, 230)), (self.goal_state, (40, 170, 70)),
                       (self.target_state, (240, 200, 40))):
            colours[tuple(self.cells[s])] = col
        img[:] = np.kron(colours, np.ones((cell, cell, 1))).astype(np.uint8)
        img[::cell, :, :] = img[:, ::cell, :] = 200  # grid lines
        if policy is not None:
            best = policy.argmax(axis=1)
            for s, (r, c) in enumerate(self.cells):
                if s == self.goal_state:
                    continue
                cy, cx = r * cell + cell // 2, c * cell + cell // 2
                dy, dx = _MOVES[best[s]]
                for k in range(cell // 3):
                    img[cy + dy * k, cx + dx * k] = (0, 0, 0)
        if hasattr(self, "_state"):
            r, c = self.cells[int(self._state)]
            q = cell // 4
            img[r * cell + q: (r + 1) * cell - q, c * cell + q: (c + 1) * cell - q] = (130, 0, 160)
        return img
