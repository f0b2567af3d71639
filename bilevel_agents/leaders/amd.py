"""AMD: adaptive model design (Chen et al. 2022), as HPGD's benchmark runs it (Thoma et al. 2024).

A model-based leader for tabular configurable MDPs: no trajectories. It carries four tables
across outer iterations (initialised at zero) and moves them by ``backups`` synchronous
backups per iteration (HPGD: 100) at the current θ, with ``π = softmax(Q_F / β)`` and, on every
state, ``V_F = β log Σ_b exp(Q_F / β)`` (the soft value), ``∇V_F = Σ_b π ∇Q_F``,
``V_L = Σ_b π Q_L``, ``Ṽ = Σ_b π Q̃``::

    Q_F ← r_F + γ_F C V_F
    ∇Q_F ← ∇r_F + γ_F C ∇V_F                                  (one table per θ coordinate)
    Q_L ← r_L + γ_L C V_L
    Q̃  ← ∇r_L + (∇Q_F − ∇V_F)(Q_L − V_L) / β + γ_L C Ṽ

(``C`` the model's continuation matrix: terminal states do not continue). The estimate is
``Σ_s μ_ξ(s) Ṽ(s)`` for the context ξ drawn this iteration from the leader's generator
(``contexts="per_iteration"``, HPGD's protocol; ``"per_episode"``: the problem's mixture ``μ0``);
clip and SGD are the shared step of :class:`~bilevel_agents.leader.Leader`.

At the fixed point of the backups the tables are the exact ``Q_F``, ``∇Q_F``, ``Q_L`` and
``∇V_L`` (``∇π = π (∇Q_F − ∇V_F) / β`` and ``Σ_b π (∇Q_F − ∇V_F) = 0``), so the estimate is the
exact hypergradient of the drawn context (:func:`~bilevel_agents.exact.tabular_hypergradient`
with ``mu0=context_mu0(ξ)``). With a few backups per iteration the tables lag behind θ: that
lag, the drawn context and the step are what AMD adds to exact ascent.

``∇r_F`` and ``∇r_L`` are the Jacobians of the problem's torch reward tables
(``tabular_rewards_torch``, forward mode): no gradient code per problem. The backups do not
differentiate the dynamics, so AMD refuses problems whose dynamics depend on θ (tax design).

HPGD's code logs the context average ``½(J_G1 + J_G2)``; so does the trainer (the exact ``J``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from bilevel_agents.families import TabularFamily
from bilevel_agents.families.tabular import (
    CONTEXT_SAMPLING,
    draw_context,
    is_contextual,
    start_distribution,
)
from bilevel_agents.leader import Leader
from bilevel_envs.followers.soft_value_iteration import soft_value
from bilevel_envs.utils import check_choice, check_int

__all__ = ["AMD", "reward_jacobians"]

#: synchronous backups per outer iteration (HPGD's AMD)
DEFAULT_BACKUPS = 100
_TABLES = ("q_f", "dq_f", "q_l", "q_tilde")


def reward_jacobians(problem: Any, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(∇r_F, ∇r_L)``, each ``(S, B, d)``: forward-mode Jacobians of the problem's torch
    reward tables at ``theta``."""
    th = torch.tensor(np.asarray(theta, dtype=np.float64).ravel())
    shape = np.shape(theta)

    def tables(flat: torch.Tensor):
        r_f, r_l = problem.tabular_rewards_torch(flat.reshape(shape))
        return r_f, r_l

    with warnings.catch_warnings():  # torch's forward mode loads scripted decompositions once
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*",
                                category=DeprecationWarning)
        jac_f, jac_l = torch.func.jacfwd(tables)(th)
    return jac_f.detach().numpy(), jac_l.detach().numpy()


class AMD(Leader):
    """AMD (Chen et al. 2022) on tabular configurable MDPs, in HPGD's protocol (module docstring).

    Args:
        br: the follower's best response over a tabular configurable MDP whose dynamics do not
            depend on θ. Only its problem's model is read: AMD's follower is its own ``Q_F``
            table; the wrapper's exact follower is what the trainer evaluates.
        backups: synchronous backups per outer iteration (HPGD: 100).
        contexts: ``"per_iteration"`` (one context per iteration from the leader's generator,
            HPGD's protocol; problems without contexts use their ``μ0``) or ``"per_episode"``
            (the gradient of the mixture objective).
        **kwargs: :class:`~bilevel_agents.leader.Leader` arguments (``lr``, ``seed``,
            ``max_grad_norm``, ...; the defaults clip to 1 and take SGD steps, as HPGD).

    Raises:
        ValueError: not a tabular configurable MDP, θ-dependent dynamics, a bad option.

    Example:
        >>> import gymnasium as gym, bilevel_envs
        >>> from bilevel_envs.wrappers import BestResponse
        >>> from bilevel_agents import AMD
        >>> br = BestResponse(gym.make("BiLevel/ContextualFourRooms-v0"), beta=0.003)
        >>> AMD(br, lr=0.5, seed=0).estimate_gradient().shape
        (105,)
    """

    name = "amd"
    families = (TabularFamily,)
    samples = False

    def __init__(self, br: Any, *, backups: int = DEFAULT_BACKUPS,
                 contexts: str = "per_iteration", **kwargs: Any):
        super().__init__(br, **kwargs)
        problem = br.problem
        if problem.config_dependent_dynamics:
            raise ValueError(f"AMD's backups differentiate the rewards only, but the dynamics "
                             f"of {type(problem).__name__} depend on θ: use another method")
        self.backups = check_int("backups", backups, 1)
        self.contexts = check_choice("contexts", contexts, CONTEXT_SAMPLING)
        S, B, d = problem.n_states, problem.n_actions, int(np.prod(br.config_space.shape))
        self.tables: dict[str, np.ndarray] = {
            "q_f": np.zeros((S, B)), "dq_f": np.zeros((S, B, d)),
            "q_l": np.zeros((S, B)), "q_tilde": np.zeros((S, B, d))}

    def backup(self, model: Any, jac_f: np.ndarray, jac_l: np.ndarray) -> np.ndarray:
        """One synchronous backup of the four tables; returns the policy it used."""
        problem, beta = self.br.problem, self.br.beta
        gf, gl = problem.gamma_follower, problem.gamma_leader
        t = self.tables
        S, B, d = t["dq_f"].shape
        cont = model.continuation()
        v_f, pi = soft_value(t["q_f"], beta)
        dv_f = np.einsum("sb,sbd->sd", pi, t["dq_f"])
        v_l = (pi * t["q_l"]).sum(axis=1)
        v_t = np.einsum("sb,sbd->sd", pi, t["q_tilde"])
        benefit = t["q_l"] - v_l[:, None]
        response = (t["dq_f"] - dv_f[:, None, :]) * (benefit / beta)[:, :, None]
        t["q_f"] = model.r_follower + gf * (cont @ v_f).reshape(S, B)
        t["dq_f"] = jac_f + gf * (cont @ dv_f).reshape(S, B, d)
        t["q_l"] = model.r_leader + gl * (cont @ v_l).reshape(S, B)
        t["q_tilde"] = jac_l + response + gl * (cont @ v_t).reshape(S, B, d)
        return pi

    def estimate_gradient(self) -> np.ndarray:
        """``backups`` backups at the current θ, then ``Σ_s μ_ξ(s) Ṽ(s)`` of the drawn context."""
        problem = self.br.problem
        context = (draw_context(problem, self.rng) if self.contexts == "per_iteration"
                   else None)
        theta = self.theta
        model = problem.tabular_model()
        jac_f, jac_l = reward_jacobians(problem, theta)
        for _ in range(self.backups):
            self.backup(model, jac_f, jac_l)
        _, pi = soft_value(self.tables["q_f"], self.br.beta)
        v_tilde = np.einsum("sb,sbd->sd", pi, self.tables["q_tilde"])
        grad = start_distribution(problem, context) @ v_tilde
        metrics = {"amd_policy_error": float(np.abs(pi - np.asarray(self.br.policy)).max())}
        if context is not None and is_contextual(problem):
            metrics["context"] = float(context)
        self.last_metrics = metrics
        return grad.reshape(self.br.config_space.shape)

    # ------------------------------------------------------------------ bookkeeping
    def hparams(self) -> dict[str, Any]:
        """Leader settings plus AMD's own options."""
        return {**super().hparams(), "backups": self.backups, "contexts": self.contexts}

    def state_dict(self) -> dict[str, Any]:
        """The leader's state plus AMD's four tables (exact resume)."""
        return {**super().state_dict(),
                "amd_tables": {k: self.tables[k].copy() for k in _TABLES}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the tables too, when present)."""
        super().load_state_dict(state)
        if "amd_tables" in state:
            self.tables = {k: np.array(state["amd_tables"][k], dtype=np.float64)
                           for k in _TABLES}
