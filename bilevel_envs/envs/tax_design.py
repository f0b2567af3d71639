"""Tax design: a government sets VAT and income tax for a saving, working, consuming household.

HPGD's second problem (Thoma et al., NeurIPS 2024, "Contextual Bilevel RL for Incentive
Alignment"), registered twice on one economy (the pure functions of this module):

* ``BiLevel/TaxDesign-v0`` (:class:`TaxDesignEnv`): assets are continuous, as in the paper.
  There is no exact soft best response: pair it with a learning follower.
* ``BiLevel/TaxDesignTabular-v0`` (:class:`TaxDesignTabularEnv`): assets on a grid, an exact
  tabular model, so the exact follower and the exact objective work.

## Description
A household (the follower) holds assets ``a ∈ [−100, 100]``. Each step it chooses how many
hours to work and how much of each of 3 goods to consume; its income is taxed at rate τ and
each good ``i`` carries a VAT rate ``VAT_i``. The leader (the government) chooses the 4 rates
to maximise social welfare. The context ξ is the household's consumption preference
``α(ξ)``: (0.6, 0.3, 0.1) or (0.1, 0.7, 0.2), uniformly. The context is part of the state and
never changes within an episode (see "Contexts").

## Leader Parameter θ
``θ ∈ R^4``, *pre-sigmoid* weights of ``(VAT_1, VAT_2, VAT_3, τ) = 2·sigmoid(θ) ∈ (0, 2)^4``;
``config_space = [−20, 20]^4``. The default θ = ``logit(0.15) ≈ −1.7346`` in every
coordinate gives HPGD's initial rates 0.3 (:func:`config_from_rates`, :func:`rates_from_config`).

## Action Space
``MultiDiscrete([10, 5, 5, 5])`` (:class:`TaxDesignEnv`): hours ``= 0.89 · b_0 ∈ {0, …, 8.01}``
and consumptions ``c_i = 1.25 · b_i ∈ {0, …, 5}``, i.e. 1250 joint actions. The tabular env
uses ``Discrete(1250)``, the joint index ``b_0·125 + b_1·25 + b_2·5 + b_3`` (row-major in
``[10, 5, 5, 5]``; :func:`decode_actions`, :func:`encode_actions`).

## Observation Space
:class:`TaxDesignEnv`: ``Box([−100, 0], [100, n_contexts − 1], (2,), float32)``, the assets
and the context index. :class:`TaxDesignTabularEnv`: ``Discrete(n_contexts · n_grid)``, the
state index ``k · n_grid + i`` (context-major) of grid point ``a_i = −100 + i·200/(n_grid−1)``.
Time is not part of the state (nothing depends on it; the time limit is a truncation).

## Rewards
Rewards are those of the state where the action is taken (before the transition), with
``u(a; κ) = κ·log(a/20 + 1)`` for ``a > 0`` and ``a`` otherwise, hours ``h`` and
consumptions ``c``:

* follower (the Gymnasium reward): ``r_F = u(a; 1) − 0.1·h² + Π_i (c_i / (1 + VAT_i))^{α_i(ξ)}``;
* leader, social welfare (``info["leader_reward"]``): ``r_L = u(a; 0) + 15·mean_i(c_i /
  (1 + VAT_i)) / 5 + 5·log(1 + Σ_i VAT_i·c_i / (1 + VAT_i) + τ·h)`` (``u(a; 0) = min(a, 0)``).

## Transition
``m = clip(a + (1 − τ)·h − Σ_i c_i, −100, 100)`` (wage 1, prices 1), then ``a' = m + 5·z``
with ``z`` a standard normal truncated so that ``a' ∈ [−100, 100]``: ``a' ~ N(m, 5²)``
truncated to ``[−100, 100]``. The dynamics depend on τ, so ``log_transition_torch`` (the
truncated-normal log density) depends on θ; the tabular env also gives the dense transition
tensor ``tabular_transitions_torch(θ)`` and its vector-Jacobian product
``tabular_transitions_vjp(θ, w)``. Tabular env: the next grid point is the cell
``[a_j − Δ/2, a_j + Δ/2) ∩ [−100, 100]`` (Δ the grid step) that the same continuous ``a'``
falls in; its probability is the truncated-normal mass of that cell (exact for the
discretised chain), a smooth function of τ.

## Starting State
``a_0 = clip(√2·N(0, 1), −100, 100)`` (tabular: its cell), in a context drawn uniformly
(``mu0`` of the tabular model), unless :meth:`ContextualMixin.set_context` fixes it.

## Episode End
Never terminates; ``gym.make`` adds a 200-step time limit (HPGD's episodes are exactly 200
steps). Exact values (tabular env) are infinite-horizon discounted, γ_F = γ_L = 0.9: the
200-step return differs from them by at most ``0.9^200 · max|r| / (1 − 0.9) ≈ 7e-9·max|r|``.

## Contexts (one per outer iteration)
HPGD draws one preference context per outer iteration. ``env.set_context(k)`` makes every
start (``reset``, every episode and restart of ``BestResponse.rollout``) use context ``k``;
``set_context(None)`` restores the uniform draw. The tabular model's ``mu0`` is always the
mixture; ``env.context_mu0(k)`` is context k's start distribution (``J_k = context_mu0(k) @
V_L``).

## Arguments
| kwarg | default | meaning |
|---|---|---|
| ``preferences`` | ``[[0.6, 0.3, 0.1], [0.1, 0.7, 0.2]]`` | one Cobb-Douglas exponent vector α (3 positive numbers) per context |
| ``noise_std`` | 5.0 | standard deviation of the (truncated) asset noise |
| ``gamma`` | 0.9 | ``γ_F = γ_L`` |
| ``max_episode_steps`` | 200 | the problem's own episode length (``gym.make`` sets the time limit) |
| ``config_bound`` | 20.0 | ``config_space = [−bound, bound]^4`` |
| ``config`` | None | initial θ (default: rates 0.3) |
| ``n_grid`` | 41 | (tabular only) number of asset grid points, ≥ 3 |

HPGD's follower temperatures are β ∈ {0.1, 0.2, 0.3}.

## Grid resolution (tabular)
``n_grid = 41`` puts a grid point every Δ = 5 = one noise standard deviation: one step's
noise spreads over about 7 cells (±3σ), so the integrated cell probabilities resolve the
drift ``(1 − τ)·h − Σ c`` (multiples of 0.89 and 1.25, smaller than Δ) smoothly in τ. The
model has 82 states × 1250 actions (a dense ``(82, 1250, 82)`` transition tensor, 67 MB),
which a Newton soft value iteration solves in about a second from scratch and a few tenths
warm-started. The tabular chain approximates the continuous economy: at the start θ and
β = 0.2, J = 33.18 / 32.37 / 31.99 with 21 / 41 / 61 grid points, so the discretisation moves
J by about 1 %, while 61 points cost 3× the time and 2.2× the memory of 41.

## Decisions where we differ from the authors' code
* Zero consumption: HPGD's Cobb-Douglas term has NaN gradients when some ``c_i = 0`` and its
  code replaces them by −0.1. The term is then identically 0 in θ, so we use its exact
  derivative 0 (computed as ``Π c_i^{α_i} · exp(−Σ α_i log(1 + VAT_i))``, finite everywhere).
  The ``1e-16`` guards in HPGD's denominators are dropped (the denominators are ≥ 1).
* The time limit is a truncation (the state does not carry time); HPGD's DQN treats step 200
  as terminal. Exact values are infinite-horizon discounted (difference ≤ 0.9^200 as above).
* The context is observed (``(assets, context)``); HPGD observes the assets only and retrains
  the follower for each drawn context. One follower can thus serve both contexts.
* The exact follower of the tabular env is the joint soft best response over the 1250
  actions; HPGD's follower is a factorised soft DQN (independent softmax per action
  dimension), which is not the soft best response of the joint action.
* ``a_0`` is clipped to [−100, 100] (HPGD does not clip; |a_0| > 100 is a 70σ event).
* Leader-side choices of HPGD (separate gradient clipping for the VAT and τ groups, no
  follower-response term for τ) are not part of the problem.

## Version History
* v0: initial version.

Example:
    >>> import gymnasium as gym, bilevel_envs
    >>> env = gym.make("BiLevel/TaxDesign-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.action_space
    ((2,), MultiDiscrete([10  5  5  5]))
    >>> tab = gym.make("BiLevel/TaxDesignTabular-v0").unwrapped
    >>> tab.n_states, tab.n_actions
    (82, 1250)
    >>> vat, tau = tab.rates()
    >>> vat.round(3).tolist(), round(tau, 3)
    ([0.3, 0.3, 0.3], 0.3)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import scipy.special as sc
import scipy.sparse as sp
import torch

from bilevel_envs.core import ConfigurableEnv, ContextualMixin, TabularConfigurableEnv, TabularModel

__all__ = ["ACTION_NVEC", "PREFERENCES", "TaxDesignEnv", "TaxDesignTabularEnv", "asset_utility",
           "cell_probabilities", "config_from_rates", "decode_actions", "encode_actions",
           "follower_reward", "next_asset_mean", "rates_from_config", "social_welfare",
           "truncnorm_log_density"]

#: hours index 0..9, consumption indices 0..4 for each of the 3 goods
ACTION_NVEC = (10, 5, 5, 5)
N_GOODS = 3
N_JOINT_ACTIONS = int(np.prod(ACTION_NVEC))
HOURS_STEP, CONSUMPTION_STEP = 0.89, 1.25
#: HPGD's two consumption-preference contexts
PREFERENCES = ((0.6, 0.3, 0.1), (0.1, 0.7, 0.2))
ASSET_BOUND = 100.0
INIT_STD = float(np.sqrt(2.0))
WORK_DISUTILITY = 0.1
ASSET_UTILITY_SCALE = 20.0
SW_CONSUMPTION_SCALE, SW_TAX_SCALE = 15.0, 5.0
MAX_CONSUMPTION = CONSUMPTION_STEP * (ACTION_NVEC[1] - 1)
RATE_SCALE, INITIAL_RATE = 2.0, 0.3


# ---------------------------------------------------------------------- the economy (pure)
def _is_torch(*xs: Any) -> bool:
    return any(isinstance(x, torch.Tensor) for x in xs)


def _like(data: Any, ref: Any) -> Any:
    """``data`` (θ-free numbers) as the type of ``ref``: a float64 tensor or a numpy array."""
    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(np.asarray(data, dtype=np.float64), dtype=ref.dtype)
    return np.asarray(data, dtype=np.float64)


def _ndtr(x: Any) -> Any:
    return torch.special.ndtr(x) if isinstance(x, torch.Tensor) else sc.ndtr(x)


def rates_from_config(theta: Any) -> tuple[Any, Any]:
    """``(VAT (3,), τ) = 2·sigmoid(θ)`` for θ of shape (4,): numpy or torch (differentiable)."""
    p = RATE_SCALE * (torch.sigmoid(theta) if isinstance(theta, torch.Tensor)
                      else sc.expit(np.asarray(theta, dtype=np.float64)))
    return p[:N_GOODS], p[N_GOODS]


def config_from_rates(vat: Any, tau: float) -> np.ndarray:
    """The θ with ``rates_from_config(θ) == (vat, tau)``; rates in (0, 2)."""
    rates = np.append(np.asarray(vat, dtype=np.float64), float(tau))
    if rates.shape != (N_GOODS + 1,) or not np.all((rates > 0) & (rates < RATE_SCALE)):
        raise ValueError(f"rates must be 3 VAT rates and one income tax in (0, 2), got {rates!r}")
    return sc.logit(rates / RATE_SCALE)


def decode_actions(actions: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(hours (...,), consumption (..., 3))`` of index actions ``(..., 4)``."""
    b = np.asarray(actions)
    return HOURS_STEP * b[..., 0], CONSUMPTION_STEP * b[..., 1:]


def encode_actions(actions: Any) -> np.ndarray:
    """Joint index ``b_0·125 + b_1·25 + b_2·5 + b_3`` of ``(..., 4)`` index actions."""
    b = np.asarray(actions)
    return np.ravel_multi_index(tuple(np.moveaxis(b, -1, 0)), ACTION_NVEC)


def _joint_actions() -> np.ndarray:
    """``(1250, 4)`` index actions in joint-index order."""
    return np.stack(np.unravel_index(np.arange(N_JOINT_ACTIONS), ACTION_NVEC), axis=-1)


def asset_utility(assets: Any, scale: float) -> np.ndarray:
    """``u(a; κ) = κ·log(a/20 + 1)`` for ``a > 0``, ``a`` otherwise (numpy; θ-free)."""
    a = np.asarray(assets, dtype=np.float64)
    return np.where(a > 0, scale * np.log1p(np.maximum(a, 0.0) / ASSET_UTILITY_SCALE), a)


def follower_reward(assets: Any, hours: Any, consumption: Any, preferences: Any,
                    vat: Any) -> Any:
    """``r_F = u(a; 1) − 0.1·h² + Π_i (c_i / (1 + VAT_i))^{α_i}`` (broadcasting).

    ``consumption`` and ``preferences`` carry the goods on their last axis. Torch when ``vat``
    is a tensor (differentiable in it), else numpy. The Cobb-Douglas term is written
    ``Π c_i^{α_i} · exp(−Σ α_i log(1 + VAT_i))``: exactly 0, with gradient 0, when some
    ``c_i = 0``.
    """
    c = np.asarray(consumption, dtype=np.float64)
    alpha = np.asarray(preferences, dtype=np.float64)
    base = asset_utility(assets, 1.0) - WORK_DISUTILITY * np.asarray(hours, np.float64) ** 2
    quantity = np.prod(c ** alpha, axis=-1)
    log_price = (torch.log1p(vat) if isinstance(vat, torch.Tensor)
                 else np.log1p(np.asarray(vat, dtype=np.float64)))
    weight = (_like(alpha, vat) * log_price).sum(-1)
    exp = torch.exp if isinstance(weight, torch.Tensor) else np.exp
    return _like(base, vat) + _like(quantity, vat) * exp(-weight)


def social_welfare(assets: Any, hours: Any, consumption: Any, vat: Any, tau: Any) -> Any:
    """Leader reward ``u(a; 0) + 15·mean_i(c_i/(1+VAT_i))/5 + 5·log(1 + Σ_i VAT_i c_i/(1+VAT_i)
    + τ·h)`` (broadcasting; torch when a rate is a tensor, differentiable in the rates)."""
    if _is_torch(vat, tau):
        ref = vat if isinstance(vat, torch.Tensor) else tau
        vat, tau = (x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=ref.dtype)
                    for x in (vat, tau))
        log = torch.log1p
    else:
        ref, vat, tau, log = None, np.asarray(vat, dtype=np.float64), float(tau), np.log1p
    c, h = _like(consumption, ref), _like(hours, ref)
    net = c / (1.0 + vat)  # consumption net of VAT (prices 1)
    revenue = (vat * net).sum(-1) + tau * h
    return (_like(np.minimum(np.asarray(assets, dtype=np.float64), 0.0), ref)
            + SW_CONSUMPTION_SCALE * net.mean(-1) / MAX_CONSUMPTION
            + SW_TAX_SCALE * log(revenue))


def next_asset_mean(assets: Any, hours: Any, total_consumption: Any, tau: Any) -> Any:
    """``m = clip(a + (1 − τ)·h − Σ c, −100, 100)`` (torch when ``tau`` is a tensor)."""
    raw = _like(assets, tau) + (1.0 - tau) * _like(hours, tau) - _like(total_consumption, tau)
    clip = torch.clip if isinstance(raw, torch.Tensor) else np.clip
    return clip(raw, -ASSET_BOUND, ASSET_BOUND)


def truncnorm_log_density(x: Any, mean: Any, std: float) -> Any:
    """``log p(x | m)`` of ``N(m, std²)`` truncated to ``[−100, 100]`` (−inf outside)."""
    x = _like(x, mean)
    z = (x - mean) / std
    mass = _ndtr((ASSET_BOUND - mean) / std) - _ndtr((-ASSET_BOUND - mean) / std)
    log = torch.log if isinstance(z, torch.Tensor) else np.log
    inside = (x >= -ASSET_BOUND) & (x <= ASSET_BOUND)
    out = -0.5 * z * z - np.log(std * np.sqrt(2.0 * np.pi)) - log(mass)
    where = torch.where if isinstance(out, torch.Tensor) else np.where
    return where(inside, out, -np.inf)


def cell_probabilities(mean: Any, edges: np.ndarray, std: float) -> Any:
    """``(..., n_cells)`` masses of ``N(mean, std²)`` on the cells ``[edges_j, edges_{j+1})``,
    normalised over the cells (the truncation to ``[edges_0, edges_-1]``).

    Each mass is a difference of normal CDFs taken on the side of the mean where it is
    accurate (upper-tail masses through the survival function). Torch when ``mean`` is.
    """
    z = (_like(edges, mean) - mean[..., None]) / std
    cdf, sf = _ndtr(z), _ndtr(-z)
    upper = sf[..., :-1] - sf[..., 1:]  # accurate above the mean
    lower = cdf[..., 1:] - cdf[..., :-1]  # accurate below it
    where = torch.where if isinstance(z, torch.Tensor) else np.where
    mass = where(z[..., :-1] > 0, upper, lower)
    return mass / mass.sum(-1)[..., None]


def _sample_truncnorm(mean: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Draws of ``N(mean, std²)`` truncated to ``[−100, 100]`` by inverse CDF (reflected for
    ``mean < 0``, so the far bound is always the lower one and its CDF may underflow to 0)."""
    flip = mean < 0
    m = np.where(flip, -mean, mean)  # m >= 0: the lower bound is the far one
    lo, hi = sc.ndtr((-ASSET_BOUND - m) / std), sc.ndtr((ASSET_BOUND - m) / std)
    z = sc.ndtri(lo + rng.random(mean.shape) * (hi - lo))
    x = np.clip(m + std * z, -ASSET_BOUND, ASSET_BOUND)
    return np.where(flip, -x, x)


def _check_preferences(preferences: Any) -> np.ndarray:
    try:
        prefs = np.asarray(preferences, dtype=np.float64)
    except (TypeError, ValueError):
        prefs = None
    if prefs is None or prefs.ndim != 2 or prefs.shape[0] < 1 or prefs.shape[1] != N_GOODS \
            or not np.all(np.isfinite(prefs)) or not np.all(prefs > 0):
        raise ValueError("preferences must be a non-empty list of 3 positive finite exponents "
                         f"per context, got {preferences!r}")
    return prefs


# ---------------------------------------------------------------------- shared env logic
class _TaxEconomy(ContextualMixin):
    """Arguments, θ plumbing and contexts shared by the continuous and the tabular env."""

    metadata = {"render_modes": []}
    #: the smallest of HPGD's temperatures (β ∈ {0.1, 0.2, 0.3})
    default_beta = 0.1

    def _init_economy(self, preferences, noise_std, gamma, max_episode_steps, config_bound,
                      render_mode) -> None:
        self.preferences = _check_preferences(PREFERENCES if preferences is None
                                              else preferences)
        for name, val in (("noise_std", noise_std), ("config_bound", config_bound)):
            if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, float, np.number)) \
                    or not (np.isfinite(val) and val > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {val!r}")
        if isinstance(gamma, (bool, np.bool_)) or not isinstance(gamma, (int, float, np.number)) \
                or not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be a number in [0, 1), got {gamma!r}")
        if isinstance(max_episode_steps, (bool, np.bool_)) \
                or not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be an integer >= 1, got "
                             f"{max_episode_steps!r}")
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r} is not supported (no rendering)")
        self.render_mode = None
        self.n_contexts = len(self.preferences)
        self.noise_std = float(noise_std)
        self.gamma_follower = self.gamma_leader = float(gamma)
        self.max_episode_steps = int(max_episode_steps)
        self.config_space = gym.spaces.Box(-float(config_bound), float(config_bound),
                                           (N_GOODS + 1,), np.float64)

    def default_config(self) -> np.ndarray:
        """θ = logit(0.15) in every coordinate: all four rates 0.3 (HPGD's start)."""
        return np.clip(config_from_rates(np.full(N_GOODS, INITIAL_RATE), INITIAL_RATE),
                       self.config_space.low, self.config_space.high)

    def rates(self, theta: Any = None) -> tuple[np.ndarray, float]:
        """``(VAT (3,), τ)`` at ``theta`` (the current config if ``None``)."""
        vat, tau = rates_from_config(self._config if theta is None
                                     else self.validate_config(theta))
        return vat, float(tau)

    def _on_config_change(self) -> None:
        self.vat, self.income_tax = self.rates()


# ---------------------------------------------------------------------- continuous assets
class TaxDesignEnv(_TaxEconomy, ConfigurableEnv):
    """Tax design with continuous assets (HPGD); see the module docstring.

    Internal state: a float64 pair ``(assets, context)``; the observation is its float32 copy.
    There is no exact soft best response for continuous assets: :meth:`make_follower` raises,
    pass a learning follower to ``BestResponse(env, beta, follower=...)`` or use
    :class:`TaxDesignTabularEnv`.
    """

    def __init__(self, preferences: Any = None, noise_std: float = 5.0, gamma: float = 0.9,
                 max_episode_steps: int = 200, config_bound: float = 20.0, config: Any = None,
                 render_mode: str | None = None):
        self._init_economy(preferences, noise_std, gamma, max_episode_steps, config_bound,
                           render_mode)
        self.observation_space = gym.spaces.Box(
            np.array([-ASSET_BOUND, 0.0], dtype=np.float32),
            np.array([ASSET_BOUND, self.n_contexts - 1], dtype=np.float32), dtype=np.float32)
        self.action_space = gym.spaces.MultiDiscrete(ACTION_NVEC)
        self.set_config(self.default_config() if config is None else config)

    # ------------------------------------------------------------------ simulator
    def sample_initial_states(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, 2)`` float64 states ``(clip(√2·N(0, 1), ±100), context)``."""
        contexts = self._draw_contexts(n, rng)
        assets = np.clip(INIT_STD * rng.standard_normal(int(n)), -ASSET_BOUND, ASSET_BOUND)
        return np.stack([assets, contexts.astype(np.float64)], axis=1)

    def _check_batch(self, states: Any, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        s = np.asarray(states, dtype=np.float64)
        b = np.asarray(actions)
        if s.ndim != 2 or s.shape[1] != 2:
            raise ValueError(f"states must have shape (N, 2) (assets, context), got {s.shape}")
        if b.shape != (s.shape[0], len(ACTION_NVEC)) or not np.issubdtype(b.dtype, np.integer) \
                or np.any(b < 0) or np.any(b >= np.asarray(ACTION_NVEC)):
            raise ValueError(f"actions must be integers of shape ({s.shape[0]}, 4) within "
                             f"{list(ACTION_NVEC)}, got {b.dtype} of shape {b.shape}")
        k = s[:, 1]
        if np.any((k != np.round(k)) | (k < 0) | (k >= self.n_contexts)) \
                or np.any(np.abs(s[:, 0]) > ASSET_BOUND):
            raise ValueError("states must be rows (assets in [-100, 100], integer context in "
                             f"[0, {self.n_contexts - 1}])")
        return s, b

    def transition(self, states, actions, rng):
        """Batched economy step: rewards of ``(a, b)``, then ``a' ~ TN(m, σ², [−100, 100])``."""
        s, b = self._check_batch(states, actions)
        a, k = s[:, 0], s[:, 1].astype(np.int64)
        hours, cons = decode_actions(b)
        r_f = follower_reward(a, hours, cons, self.preferences[k], self.vat)
        r_l = social_welfare(a, hours, cons, self.vat, self.income_tax)
        mean = next_asset_mean(a, hours, cons.sum(-1), self.income_tax)
        nxt = np.stack([_sample_truncnorm(mean, self.noise_std, rng), s[:, 1]], axis=1)
        return nxt, r_f, r_l, np.zeros(s.shape[0], dtype=bool)

    def state_to_obs(self, state: Any) -> np.ndarray:
        """The float32 pair ``(assets, context)``."""
        return np.asarray(state, dtype=np.float32)

    def validate_action(self, action: Any) -> np.ndarray:
        """4 integer indices within ``[10, 5, 5, 5]``."""
        b = np.asarray(action)
        if b.shape != (len(ACTION_NVEC),) or not np.issubdtype(b.dtype, np.integer) \
                or np.any(b < 0) or np.any(b >= np.asarray(ACTION_NVEC)):
            raise ValueError(f"action must be 4 integers in [0, 9] × [0, 4]³ (MultiDiscrete"
                             f"({list(ACTION_NVEC)})), got {action!r}")
        return b.astype(np.int64)

    # ------------------------------------------------------------------ torch terms
    def _torch_data(self, states: Any, actions: Any):
        s = states.detach().numpy() if isinstance(states, torch.Tensor) else states
        b = actions.detach().numpy() if isinstance(actions, torch.Tensor) else actions
        s = np.asarray(s, dtype=np.float64)
        hours, cons = decode_actions(np.asarray(b, dtype=np.int64))
        return s[:, 0], s[:, 1].astype(np.int64), hours, cons

    def follower_reward_torch(self, theta, states, actions):
        """``r_F^θ(s, b)``, differentiable in θ (through the VAT), shape ``(N,)``."""
        a, k, hours, cons = self._torch_data(states, actions)
        vat, _ = rates_from_config(theta)
        return follower_reward(a, hours, cons, self.preferences[k], vat)

    def leader_reward_torch(self, theta, states, actions):
        """Social welfare ``r_L^θ(s, b)``, differentiable in θ, shape ``(N,)``."""
        a, _, hours, cons = self._torch_data(states, actions)
        vat, tau = rates_from_config(theta)
        return social_welfare(a, hours, cons, vat, tau)

    def log_transition_torch(self, theta, states, actions, next_states):
        """``log p^θ(a'|a, b)``: the truncated-normal log density (depends on θ through τ).

        The context never changes; only the assets of ``next_states`` are read.
        """
        a, _, hours, cons = self._torch_data(states, actions)
        s2 = next_states.detach().numpy() if isinstance(next_states, torch.Tensor) \
            else np.asarray(next_states, dtype=np.float64)
        _, tau = rates_from_config(theta)
        mean = next_asset_mean(a, hours, cons.sum(-1), tau)
        return truncnorm_log_density(s2[:, 0], mean, self.noise_std)

    # ------------------------------------------------------------------ follower
    def make_follower(self, beta: float, **kwargs: Any):
        """Not available: raise ``ValueError`` (no exact solver for continuous assets)."""
        raise ValueError(
            "TaxDesign-v0 has continuous assets and no exact soft best response: pass a "
            "learning follower (BestResponse(env, beta, follower=...)) or use the tabular "
            "version BiLevel/TaxDesignTabular-v0, which has an exact follower")


# ---------------------------------------------------------------------- tabular assets
class TaxDesignTabularEnv(_TaxEconomy, TabularConfigurableEnv):
    """Tax design with assets on a grid: an exact tabular model; see the module docstring.

    States are ``k · n_grid + i`` (context k, grid point ``asset_grid[i]``); actions are joint
    indices (:func:`decode_actions` of ``joint_actions[b]``). The transition depends on τ:
    :meth:`tabular_transitions_torch` is the dense ``(S, B, S)`` tensor, differentiable in θ.
    """

    def __init__(self, preferences: Any = None, noise_std: float = 5.0, gamma: float = 0.9,
                 max_episode_steps: int = 200, config_bound: float = 20.0, config: Any = None,
                 render_mode: str | None = None, n_grid: int = 41):
        self._init_economy(preferences, noise_std, gamma, max_episode_steps, config_bound,
                           render_mode)
        if isinstance(n_grid, (bool, np.bool_)) or not isinstance(n_grid, (int, np.integer)) \
                or not 3 <= n_grid <= 401:
            raise ValueError(f"n_grid must be an integer in [3, 401], got {n_grid!r}")
        n = self.n_grid = int(n_grid)
        self.asset_grid = np.linspace(-ASSET_BOUND, ASSET_BOUND, n)
        self.grid_step = 2 * ASSET_BOUND / (n - 1)
        mids = self.asset_grid[:-1] + self.grid_step / 2
        self._edges = np.concatenate(([-ASSET_BOUND], mids, [ASSET_BOUND]))
        self.n_states, self.n_actions = self.n_contexts * n, N_JOINT_ACTIONS
        self.joint_actions = _joint_actions()
        self._hours, self._cons = decode_actions(self.joint_actions)  # (B,), (B, 3)
        # the dynamics depend on (grid point, hours index, Σ consumption indices) only
        self._hours_idx = self.joint_actions[:, 0]
        self._cons_idx = self.joint_actions[:, 1:].sum(axis=1)
        self._hours_levels = HOURS_STEP * np.arange(ACTION_NVEC[0])
        self._cons_levels = CONSUMPTION_STEP * np.arange(3 * (ACTION_NVEC[1] - 1) + 1)
        self._n_groups = len(self._hours_levels) * len(self._cons_levels)  # 130, all used
        self._flat_dynamics_index = self._hours_idx * len(self._cons_levels) + self._cons_idx
        states = np.arange(self.n_states)
        self._state_grid, self._state_context = states % n, states // n
        self._state_assets = self.asset_grid[self._state_grid]
        init_edges = np.concatenate(([-np.inf], mids, [np.inf]))
        self._init_cells = np.diff(sc.ndtr(init_edges / INIT_STD))
        self._init_cells /= self._init_cells.sum()
        self.terminal = np.zeros(self.n_states, dtype=bool)
        self.observation_space = gym.spaces.Discrete(self.n_states)
        self.action_space = gym.spaces.Discrete(N_JOINT_ACTIONS)
        #: the joint action's factors (hours, three goods; index order of encode_actions)
        self.action_factors = tuple(int(n) for n in ACTION_NVEC)
        self.set_config(self.default_config() if config is None else config)

    def __getstate__(self) -> dict:
        """Pickle without the θ-dependent caches (~100 MB; rebuilt on demand)."""
        state = self.__dict__.copy()
        for key in ("_dynamics_cache", "_csr_structure"):
            state.pop(key, None)
        return state

    # ------------------------------------------------------------------ states
    def state_context(self, states: Any) -> Any:
        """Context of state index(es) ``states``."""
        return np.asarray(states) // self.n_grid

    def state_assets(self, states: Any) -> Any:
        """Assets (grid value) of state index(es) ``states``."""
        return self.asset_grid[np.asarray(states) % self.n_grid]

    def asset_cell(self, assets: Any) -> np.ndarray:
        """Grid index of the cell ``[a_i − Δ/2, a_i + Δ/2)`` containing ``assets``."""
        i = np.floor((np.asarray(assets, dtype=np.float64) + ASSET_BOUND) / self.grid_step + 0.5)
        return np.clip(i, 0, self.n_grid - 1).astype(np.int64)

    def context_mu0(self, context: int | None = None) -> np.ndarray:
        """``(S,)`` start distribution of ``context``, or of the uniform mixture (the model's
        ``mu0``) for ``None``; ``J_k = context_mu0(k) @ V_L``."""
        weights = np.full(self.n_contexts, 1.0 / self.n_contexts)
        if context is not None:
            if isinstance(context, (bool, np.bool_)) or not isinstance(
                    context, (int, np.integer)) or not 0 <= context < self.n_contexts:
                raise ValueError(f"context must be None or an integer in [0, "
                                 f"{self.n_contexts - 1}], got {context!r}")
            weights = np.eye(self.n_contexts)[int(context)]
        return (weights[:, None] * self._init_cells[None, :]).ravel()

    # ------------------------------------------------------------------ model
    def _grid_table(self, tau: Any) -> Any:
        """``(n_grid, 10, 13, n_grid)`` cell probabilities of ``a'`` given the grid point, the
        hours index and the sum of the consumption indices (torch when ``tau`` is)."""
        mean = next_asset_mean(self.asset_grid[:, None, None], self._hours_levels[None, :, None],
                               self._cons_levels[None, None, :], tau)
        return cell_probabilities(mean, self._edges, self.noise_std)

    def _cell_transitions(self, tau: Any) -> Any:
        """``(n_grid, B, n_grid)`` transition probabilities within one context."""
        table = self._grid_table(tau)
        n = self.n_grid
        flat = self._flat_dynamics_index  # (B,) row of (hours, Σ consumption)
        if isinstance(table, torch.Tensor):
            return torch.index_select(table.reshape(n, self._n_groups, n), 1,
                                      torch.as_tensor(flat))
        return np.take(table.reshape(n, self._n_groups, n), flat, axis=1)

    def tabular_transitions_torch(self, theta: torch.Tensor) -> torch.Tensor:
        """Dense ``(S, B, S)`` tensor ``p^θ(s'|s, b)``, differentiable in θ (through τ)."""
        _, tau = rates_from_config(theta)
        rows = self._cell_transitions(tau).reshape(self.n_grid * self.n_actions, self.n_grid)
        # block-diagonal over the contexts (the context never changes); rows (s, b) state-major
        return torch.block_diag(*[rows] * self.n_contexts).reshape(
            self.n_states, self.n_actions, self.n_states)

    def tabular_transitions_vjp(self, theta: Any, weights: Any) -> np.ndarray:
        """``∇θ Σ_{s,b,s'} w(s, b, s') p^θ(s'|s, b)`` for a θ-free ``(S, B, S)`` weight array.

        Equal to autograd through :meth:`tabular_transitions_torch` (tested), but the weights
        are first summed over the contexts' diagonal blocks and over the actions sharing
        (hours, Σ consumption), so autograd only runs through the small
        ``(n_grid, 10, 13, n_grid)`` table.
        """
        theta = self.validate_config(theta)
        n, B, K = self.n_grid, self.n_actions, self.n_contexts
        w = np.asarray(weights, dtype=np.float64).reshape(K, n, B, K, n)
        diag = w[np.arange(K), :, :, np.arange(K), :].sum(axis=0)  # (n, B, n)
        order = np.argsort(self._flat_dynamics_index, kind="stable")
        starts = np.searchsorted(self._flat_dynamics_index[order], np.arange(self._n_groups))
        grouped = np.add.reduceat(diag[:, order, :], starts, axis=1)  # (n, 130, n)
        th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        table = self._grid_table(rates_from_config(th)[1])
        total = (torch.from_numpy(grouped.reshape(table.shape)) * table).sum()
        (grad,) = torch.autograd.grad(total, th)
        return grad.numpy()

    def _reward_tables(self, vat: Any, tau: Any) -> tuple[Any, Any]:
        """``(S, B)`` follower and leader rewards (torch when the rates are tensors)."""
        a = self._state_assets[:, None]
        prefs = self.preferences[self._state_context][:, None, :]
        r_f = follower_reward(a, self._hours[None, :], self._cons[None], prefs, vat)
        r_l = social_welfare(a, self._hours[None, :], self._cons[None], vat, tau)
        return r_f, r_l

    def tabular_rewards_torch(self, theta: torch.Tensor):
        """``(r_F, r_L)`` tables of shape ``(S, B)`` as differentiable functions of θ."""
        vat, tau = rates_from_config(theta)
        return self._reward_tables(vat, tau)

    def _on_config_change(self) -> None:
        super()._on_config_change()
        self._r_follower, self._r_leader = self._reward_tables(self.vat, self.income_tax)

    def _dynamics(self, tau: float) -> tuple[sp.csr_array, np.ndarray]:
        """Sparse ``(S·B, S)`` transitions and the dense ``(S, B, S)`` tensor at ``tau``
        (cached: only τ changes them). Block-diagonal: the context never changes."""
        cached = getattr(self, "_dynamics_cache", None)
        if cached is not None and cached[0] == tau:
            return cached[1], cached[2]
        block = self._cell_transitions(tau)
        n, B, K = self.n_grid, self.n_actions, self.n_contexts
        dense = np.zeros((K, n, B, K, n))
        contexts = np.arange(K)
        dense[contexts, :, :, contexts, :] = block  # (K, n, B, n) on the diagonal blocks
        dense = dense.reshape(self.n_states, B, self.n_states)
        if not hasattr(self, "_csr_structure"):  # every (s, b, s') of the diagonal blocks
            cols = (np.arange(n, dtype=np.int32)[None, None, :]
                    + n * np.arange(K, dtype=np.int32)[:, None, None])
            self._csr_structure = (np.repeat(cols, n * B, axis=1).ravel(),
                                   n * np.arange(self.n_states * B + 1, dtype=np.int64))
        indices, indptr = self._csr_structure
        sparse = sp.csr_array((np.tile(block.ravel(), K), indices.copy(), indptr.copy()),
                              shape=(self.n_states * B, self.n_states))
        sparse.eliminate_zeros()  # underflowed far tails
        self._dynamics_cache = (tau, sparse, dense)
        return sparse, dense

    def tabular_model(self, theta: Any = None) -> TabularModel:
        """The exact model of the discretised chain at ``theta`` (the current config if
        ``None``); the current config is not changed."""
        theta = self._config if theta is None else self.validate_config(theta)
        vat, tau = rates_from_config(theta)
        r_f, r_l = self._reward_tables(vat, tau)
        sparse, dense = self._dynamics(float(tau))
        # no terminal state: the continuation is the transition itself
        return TabularModel(transitions=sparse, r_follower=r_f, r_leader=r_l,
                            mu0=self.context_mu0(None), terminal=self.terminal.copy(),
                            cont=sparse, cont3=dense if self.n_states <= TabularModel.DENSE_LIMIT
                            else None)

    # ------------------------------------------------------------------ simulator
    def sample_initial_states(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n,)`` states: the cell of ``clip(√2·N(0, 1), ±100)`` in the set or a drawn
        context."""
        contexts = self._draw_contexts(n, rng)
        assets = np.clip(INIT_STD * rng.standard_normal(int(n)), -ASSET_BOUND, ASSET_BOUND)
        return contexts * self.n_grid + self.asset_cell(assets)

    def transition(self, states, actions, rng):
        """Batched step: table rewards, then the cell of ``a' ~ TN(m, σ², [−100, 100])``."""
        s = np.asarray(states)
        b = np.asarray(actions)
        if not (np.issubdtype(s.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)) \
                or s.ndim != 1 or b.shape != s.shape or np.any((s < 0) | (s >= self.n_states)) \
                or np.any((b < 0) | (b >= self.n_actions)):
            raise ValueError(f"states and actions must be integer arrays of equal length in "
                             f"[0, {self.n_states}) and [0, {self.n_actions})")
        i, k = s % self.n_grid, s // self.n_grid
        mean = next_asset_mean(self.asset_grid[i], self._hours[b], self._cons[b].sum(-1),
                               self.income_tax)
        cell = self.asset_cell(_sample_truncnorm(mean, self.noise_std, rng))
        return (k * self.n_grid + cell, self._r_follower[s, b], self._r_leader[s, b],
                np.zeros(s.shape[0], dtype=bool))

    def state_to_obs(self, state: Any) -> int:
        """The state index ``k · n_grid + i``."""
        return int(state)

    def validate_action(self, action: Any) -> int:
        """A joint action index in ``[0, 1250)``."""
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)) \
                or not 0 <= int(action) < self.n_actions:
            raise ValueError(f"action must be an integer in [0, {self.n_actions - 1}] (joint "
                             f"index of MultiDiscrete({list(ACTION_NVEC)})), got {action!r}")
        return int(action)

    def log_transition_torch(self, theta, states, actions, next_states):
        """``log p^θ(s'|s, b)``: the log of the entries of :meth:`tabular_transitions_torch`
        (computed for the given rows only), differentiable in θ; −inf across contexts."""
        s, b, s2 = (np.asarray(x.detach().numpy() if isinstance(x, torch.Tensor) else x,
                               dtype=np.int64) for x in (states, actions, next_states))
        _, tau = rates_from_config(theta)
        mean = next_asset_mean(self.asset_grid[s % self.n_grid], self._hours[b],
                               self._cons[b].sum(-1), tau)
        probs = cell_probabilities(mean, self._edges, self.noise_std)
        picked = probs[torch.arange(len(s)), torch.as_tensor(s2 % self.n_grid)]
        same = torch.as_tensor(s // self.n_grid == s2 // self.n_grid)
        return torch.where(same, torch.log(picked), -torch.inf)
