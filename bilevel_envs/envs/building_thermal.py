"""n-zone building thermal control: a linear-Gaussian configurable MDP (paper §5.2, App. C.5).

The follower runs the HVAC units of a building with ``n = 4`` zones and ``m = 2`` units as an
entropy-regularised LQR (App. C.4, Proposition 1); the leader chooses the building's insulation
and inter-zone airflow. State ``s ∈ R^4`` = temperature deviations, action ``b ∈ R^2`` = HVAC
actuation.

Dynamics (eqs. 95-104)::

    s' = A_θ s + B b + w,   w ~ N(0, W),   W = 0.02² I_4
    A_θ[i, i] = 1 + k_i (1 − α_i) − Σ_{j≠i} A_θ[i, j]
    A_θ[0,1] = h12 β1, A_θ[0,3] = h41 β4, A_θ[1,0] = h21 β1, A_θ[1,2] = h23 β2,
    A_θ[2,1] = h32 β2, A_θ[2,3] = h34 β3, A_θ[3,0] = h41 β4, A_θ[3,2] = h43 β3,
    k = (0.04, 0.03, 0.06, 0.05), h12 = h41 = 0.05, h21 = h43 = 0.03, h23 = h32 = 0.04, h34 = 0.06

with ``B = [[.1, 0], [.6, 0], [0, .55], [0, .3]]`` (eq. 105).

Leader parameter: ``θ ∈ R^8`` *pre-sigmoid*; insulation ``α = σ(θ[:4])`` and airflow
``β_air = σ(θ[4:])`` (the authors' ``StaticModel``; ``config_space`` is the finite box
``[-20, 20]^8``, i.e. σ ∈ [2e-9, 1 − 2e-9]). Default θ = 0 (α = β_air = 0.5, the authors' start
up to their N(0, 0.01²) jitter).

Rewards (rewards of the state where the action is taken, eqs. 49, 106-107)::

    r_F(s, b) = −sᵀQ̄s − bᵀR̄b,   Q̄ = diag(8, 1, 5, 6),  R̄ = 0.01 I_2
    r_L(s, b) = −Var_pop(s) − 0.5 ‖b‖² − 0.1 (‖α‖² + ‖β_air‖²)

Start ``s0 ~ N(0, 25 I_4)``; episodes are 100 steps (time limit, no termination);
``γ_F = γ_L = 0.9``; the paper's follower temperature is β = 0.1.

Where the paper and the authors' code differ:

- Noise: the paper prints a 2×2 ``W = diag(0.02, 0.02)`` (a typo, the state is 4-d); we use a
  noise standard deviation of 0.02 per zone (covariance 0.02² I_4), as the code does.
- The code clips the state to [−30, 30] and draws truncated-normal noise there; we keep the
  paper's unclipped linear-Gaussian model, so the simulator, the exact follower (DARE) and
  the exact objective all use the same model. (|s| > 30 is a 6σ event at the start and the
  closed loop contracts, so the difference is negligible.) Actions are unclipped in both.
- The paper initialises θ = σ(φ), φ ~ N(0, I); the code uses N(0, 0.01²) pre-sigmoid weights.
  We default to θ = 0; leaders choose their own initialisation.
- The code's follower runs Riccati iteration to a 1e-6 tolerance; we solve the DARE exactly.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from bilevel_envs.core import ConfigurableEnv
from bilevel_envs.followers.maxent_lqr import LQRModel, MaxEntLQRFollower

__all__ = ["BuildingThermalEnv"]

N_ZONES, N_HVAC = 4, 2
#: insulation effects k_i (eqs. 101-104)
INSULATION_EFFECT = np.array([0.04, 0.03, 0.06, 0.05])
#: (row, col, coefficient h, airflow index) of each off-diagonal entry of A_θ (eq. 100)
COUPLINGS = (
    (0, 1, 0.05, 0), (0, 3, 0.05, 3),
    (1, 0, 0.03, 0), (1, 2, 0.04, 1),
    (2, 1, 0.04, 1), (2, 3, 0.06, 2),
    (3, 0, 0.05, 3), (3, 2, 0.03, 2),
)
B_MATRIX = np.array([[0.10, 0.0], [0.6, 0.0], [0.0, 0.55], [0.0, 0.30]])
Q_BAR = np.diag([8.0, 1.0, 5.0, 6.0])
R_BAR = 0.01 * np.eye(N_HVAC)


def _coupling_tensor() -> np.ndarray:
    """``C[k, i, j]``: derivative of ``A_θ[i, j]`` w.r.t. airflow ``β_k`` (linear in β)."""
    C = np.zeros((N_ZONES, N_ZONES, N_ZONES))
    for i, j, h, k in COUPLINGS:
        C[k, i, j] += h
        C[k, i, i] -= h
    return C


_COUPLING = _coupling_tensor()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


class BuildingThermalEnv(ConfigurableEnv):
    """4-zone building thermal control with a configurable building (paper App. C.5).

    ## Description
    The follower (an HVAC controller) keeps the zone temperature deviations small; the leader
    configures insulation and airflow (θ) to make the building's temperature uniform and the
    HVAC cheap. See the module docstring for the equations.

    ## Action Space
    ``Box(-10, 10, (2,), float32)`` (the authors' ``hvac_range``) as declared bounds; the
    actuation is not clipped and ``step`` accepts any finite 2-vector (the follower's Gaussian
    policy is unbounded).

    ## Observation Space
    ``Box(-1e3, 1e3, (4,), float32)``: temperature deviations of the 4 zones (never clipped).

    ## Rewards
    The Gymnasium reward is the follower's ``r_F(s, b) = −sᵀQ̄s − bᵀR̄b``;
    ``info["leader_reward"]`` is ``r_L(s, b)``.

    ## Starting State
    ``s0 ~ N(0, σ0² I)`` with ``σ0 = 5``.

    ## Episode End
    Never terminates; 100-step time limit (``max_episode_steps``).

    ## Rendering
    ``render_mode="rgb_array"``: a ``(480, 640, 3)`` ``uint8`` picture of the episode so far:
    the four zone temperature deviations (top) and the two HVAC actions (bottom) against the
    step, with θ's insulation and airflow in the title (matplotlib's Agg canvas; no window).

    ## Arguments
    - ``noise_std`` (0.02): per-zone noise standard deviation.
    - ``init_std`` (5.0): start-state standard deviation.
    - ``gamma`` (0.9): ``γ_F = γ_L``.
    - ``max_episode_steps`` (100).
    - ``config_bound`` (20.0): ``config_space = [−bound, bound]^8``.
    - ``config``: initial θ (default zeros).
    - ``render_mode``: ``None`` or ``"rgb_array"``.

    Example:
        >>> env = BuildingThermalEnv()
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, env.config_space.shape
        ((4,), (8,))
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    #: the paper's follower temperature (App. C.5)
    default_beta = 0.1
    #: θ = (insulation logits (4), airflow logits (4)): two groups (the authors clip them apart)
    config_groups = (N_ZONES, N_ZONES)

    def __init__(self, noise_std: float = 0.02, init_std: float = 5.0, gamma: float = 0.9,
                 max_episode_steps: int = 100, config_bound: float = 20.0,
                 config: Any = None, render_mode: str | None = None):
        for name, val in (("noise_std", noise_std), ("init_std", init_std),
                          ("config_bound", config_bound)):
            if not (np.isfinite(val) and val > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {val!r}")
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {gamma!r}")
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or "
                             f"None, got {render_mode!r}")
        self.render_mode = render_mode
        self._trace_states: list[np.ndarray] = []
        self._trace_actions: list[np.ndarray] = []
        self.noise_std = float(noise_std)
        self.init_std = float(init_std)
        self.gamma_follower = self.gamma_leader = float(gamma)
        self.max_episode_steps = int(max_episode_steps)
        self.n_zones, self.n_hvac = N_ZONES, N_HVAC
        self.B = B_MATRIX.copy()
        self.Q_bar, self.R_bar = Q_BAR.copy(), R_BAR.copy()
        self.W = self.noise_std**2 * np.eye(N_ZONES)
        # Finite declared bounds (Gymnasium's checker rejects ±inf): temperatures stay far inside
        # ±1e3 (s0 has SD 5), and the HVAC box is the authors' ``hvac_range`` [−10, 10]. As in
        # their code the actuation is not clipped: ``step`` accepts any finite 2-vector.
        self.observation_space = gym.spaces.Box(-1e3, 1e3, (N_ZONES,), np.float32)
        self.action_space = gym.spaces.Box(-10.0, 10.0, (N_HVAC,), np.float32)
        self.config_space = gym.spaces.Box(-float(config_bound), float(config_bound),
                                           (2 * N_ZONES,), np.float64)
        self.set_config(self.default_config() if config is None else config)

    # ------------------------------------------------------------------ θ → model
    @staticmethod
    def split_config(theta: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(α, β_air) = (σ(θ[:4]), σ(θ[4:]))``."""
        p = _sigmoid(theta)
        return p[:N_ZONES], p[N_ZONES:]

    @staticmethod
    def dynamics_matrix(insulation: np.ndarray, airflow: np.ndarray) -> np.ndarray:
        """``A_θ`` of eq. (100) from post-sigmoid insulation α and airflow β (numpy)."""
        ins = np.asarray(insulation, dtype=np.float64)
        air = np.asarray(airflow, dtype=np.float64)
        return (np.eye(N_ZONES) + np.diag(INSULATION_EFFECT * (1.0 - ins))
                + np.einsum("k,kij->ij", air, _COUPLING))

    @staticmethod
    def dynamics_matrix_torch(insulation, airflow):
        """``A_θ`` of eq. (100) as a differentiable torch function of (α, β_air)."""
        import torch

        dt = insulation.dtype
        k = torch.as_tensor(INSULATION_EFFECT, dtype=dt)
        C = torch.as_tensor(_COUPLING, dtype=dt)
        return (torch.eye(N_ZONES, dtype=dt) + torch.diag(k * (1.0 - insulation))
                + torch.einsum("k,kij->ij", airflow, C))

    def _on_config_change(self) -> None:
        self.insulation, self.airflow = self.split_config(self._config)
        self.A = self.dynamics_matrix(self.insulation, self.airflow)
        self.config_cost = 0.1 * float(self.insulation @ self.insulation
                                       + self.airflow @ self.airflow)

    def lqr_model(self, theta: Any = None) -> LQRModel:
        """The follower's :class:`LQRModel` at ``theta`` (the current config if ``None``)."""
        if theta is None:
            A = self.A
        else:
            A = self.dynamics_matrix(*self.split_config(self.validate_config(theta)))
        return LQRModel(A=A.copy(), B=self.B.copy(), Q=self.Q_bar.copy(), R=self.R_bar.copy(),
                        W=self.W.copy(), gamma=self.gamma_follower)

    # ------------------------------------------------------------------ simulator
    def sample_initial_states(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, 4)`` float64 draws of ``s0 ~ N(0, σ0² I)``."""
        return self.init_std * rng.standard_normal((int(n), N_ZONES))

    def _check_batch(self, states: np.ndarray, actions: np.ndarray):
        s = np.asarray(states, dtype=np.float64)
        b = np.asarray(actions, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != N_ZONES:
            raise ValueError(f"states must have shape (N, {N_ZONES}), got {s.shape}")
        if b.shape != (s.shape[0], N_HVAC):
            raise ValueError(f"actions must have shape ({s.shape[0]}, {N_HVAC}), got {b.shape}")
        return s, b

    def follower_reward(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``r_F(s, b) = −sᵀQ̄s − bᵀR̄b`` (eq. 49), vectorised."""
        s, b = self._check_batch(states, actions)
        return -(s * s @ np.diag(self.Q_bar) + b * b @ np.diag(self.R_bar))

    def leader_reward(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``r_L(s, b) = −Var_pop(s) − 0.5‖b‖² − 0.1(‖α‖² + ‖β‖²)`` (eqs. 106-107)."""
        s, b = self._check_batch(states, actions)
        return -s.var(axis=1) - 0.5 * np.einsum("ni,ni->n", b, b) - self.config_cost

    def transition(self, states, actions, rng):
        """Batched ``s' = A_θ s + B b + w`` with the rewards of ``(s, b)``; never terminates."""
        s, b = self._check_batch(states, actions)
        nxt = s @ self.A.T + b @ self.B.T + self.noise_std * rng.standard_normal(s.shape)
        r_f = -(s * s @ np.diag(self.Q_bar) + b * b @ np.diag(self.R_bar))
        r_l = -s.var(axis=1) - 0.5 * np.einsum("ni,ni->n", b, b) - self.config_cost
        return nxt, r_f, r_l, np.zeros(s.shape[0], dtype=bool)

    def next_state_sigma_points(self, states: np.ndarray, actions: np.ndarray):
        """Sigma points of ``p^θ(·|s, b) = N(A_θ s + B b, W)``: ``μ ± √n L e_i``, ``LLᵀ = W``.

        With equal weights ``1/(2n)`` they integrate exactly every polynomial of degree ≤ 3 in
        the noise, e.g. ``E[V(s') ∇θ log p(s'|s, b)]`` for a quadratic ``V`` (used by leaders to
        Rao-Blackwellise the score terms of Theorem 1).

        Returns:
            ``(points (N, 2n, n), weights (2n,))``.
        """
        s, b = self._check_batch(states, actions)
        mean = s @ self.A.T + b @ self.B.T
        off = np.sqrt(N_ZONES) * np.linalg.cholesky(self.W).T
        pts = mean[:, None, :] + np.concatenate([off, -off])[None]
        return pts, np.full(2 * N_ZONES, 1.0 / (2 * N_ZONES))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode (:meth:`ConfigurableEnv.reset`); the rendered trace restarts."""
        out = super().reset(seed=seed, options=options)
        self._trace_states, self._trace_actions = [np.array(self._state)], []
        return out

    def step(self, action: Any):
        """One follower step (:meth:`ConfigurableEnv.step`), recorded for :meth:`render`."""
        out = super().step(action)
        self._trace_states.append(np.array(self._state))
        self._trace_actions.append(self.validate_action(action))
        return out

    def render(self) -> np.ndarray | None:
        """``"rgb_array"``: the zone temperatures and HVAC actions of the episode so far as a
        ``(480, 640, 3)`` ``uint8`` array; ``None`` without a render mode."""
        if self.render_mode != "rgb_array":
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.8), dpi=100)
        canvas = FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        states = np.array(self._trace_states).reshape(-1, N_ZONES)
        actions = np.array(self._trace_actions).reshape(-1, N_HVAC)
        for i in range(N_ZONES):
            top.plot(np.arange(len(states)), states[:, i], lw=1.3, label=f"zone {i + 1}")
        top.axhline(0.0, color="k", lw=0.6, ls=":")
        top.set_ylabel("temperature deviation", fontsize=8)
        top.legend(fontsize=7, ncol=4, loc="upper right")
        for j in range(N_HVAC):
            bottom.step(np.arange(len(actions)), actions[:, j], where="post", lw=1.3,
                        label=f"HVAC unit {j + 1}")
        bottom.axhline(0.0, color="k", lw=0.6, ls=":")
        bottom.set_ylabel("HVAC action", fontsize=8)
        bottom.set_xlabel("step")
        bottom.set_xlim(0, self.max_episode_steps)
        bottom.legend(fontsize=7, ncol=2, loc="upper right")
        for ax in (top, bottom):
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.25)
            ax.ticklabel_format(axis="y", useOffset=False)
        fig.suptitle(f"building thermal control, step {len(actions)}/{self.max_episode_steps}: "
                     f"insulation α = {np.round(self.insulation, 2).tolist()}, airflow = "
                     f"{np.round(self.airflow, 2).tolist()}", fontsize=8)
        fig.tight_layout()
        canvas.draw()
        return np.array(canvas.buffer_rgba())[..., :3]

    def state_to_obs(self, state: Any) -> np.ndarray:
        """The observation of a state: the temperature deviations as ``float32``."""
        return np.asarray(state, dtype=np.float32)

    def validate_action(self, action: Any) -> np.ndarray:
        """Any finite real 2-vector (the HVAC actuation is unbounded)."""
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"action {action!r} is not a real vector of shape (2,)") from exc
        if a.shape != (N_HVAC,):
            raise ValueError(f"action must have shape ({N_HVAC},), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN or inf: {a!r}")
        return a

    # ------------------------------------------------------------------ torch terms
    def _torch_batch(self, theta, *arrays):
        import torch

        dt = theta.dtype if isinstance(theta, torch.Tensor) else torch.float64
        return [torch.as_tensor(np.asarray(x, dtype=np.float64) if not isinstance(
            x, torch.Tensor) else x, dtype=dt) for x in arrays]

    def follower_reward_torch(self, theta, states, actions):
        """``r_F(s, b)`` (does not depend on θ here), torch, shape ``(N,)``."""
        import torch

        s, b = self._torch_batch(theta, states, actions)
        q = torch.tensor(np.diag(self.Q_bar), dtype=s.dtype)
        r = torch.tensor(np.diag(self.R_bar), dtype=s.dtype)
        return -((s * s) @ q + (b * b) @ r)

    def leader_reward_torch(self, theta, states, actions):
        """``r_L^θ(s, b)`` (eqs. 106-107); only the configuration cost depends on θ."""
        import torch

        s, b = self._torch_batch(theta, states, actions)
        p = torch.sigmoid(theta)
        cost = 0.1 * (p * p).sum()
        var = s.var(dim=1, unbiased=False)
        return -var - 0.5 * (b * b).sum(dim=1) - cost

    def log_transition_torch(self, theta, states, actions, next_states):
        """``log p^θ(s'|s, b)`` = log N(s'; A_θ s + B b, 0.02² I), differentiable in θ."""
        import torch

        s, b, s2 = self._torch_batch(theta, states, actions, next_states)
        p = torch.sigmoid(theta)
        A = self.dynamics_matrix_torch(p[:N_ZONES], p[N_ZONES:])
        mean = s @ A.T + b @ torch.as_tensor(self.B, dtype=s.dtype).T
        z = (s2 - mean) / self.noise_std
        return (-0.5 * (z * z).sum(dim=1)
                - N_ZONES * (np.log(self.noise_std) + 0.5 * np.log(2 * np.pi)))

    # ------------------------------------------------------------------ follower
    def make_follower(self, beta: float, **kwargs: Any) -> MaxEntLQRFollower:
        """The exact MaxEnt-LQR best response (paper Proposition 1)."""
        if kwargs:
            raise ValueError(f"unknown follower options {sorted(kwargs)} for MaxEntLQRFollower")
        return MaxEntLQRFollower(beta)
