"""Model-based BC-HG for linear-Gaussian Markov games (the LQR game): Theorem 2 with the
plug-in critic and control variates from the fitted model.

BC-HG's estimate (Theorem 2, eq. 8) is ``(1/(1−γ_L)) E_d[Q_L ∇log f + (B_L/β) ∇Q_F]``. With the
plug-in model critic (:class:`~bilevel_agents.critics.LQRModelCritic`: least-squares dynamics,
the follower's published policy, the leader's own reward), every expectation *given a visited
state* has a closed form, so each sampled score-function term can be replaced by its
conditional expectation under the fitted model (Rao–Blackwellisation; unbiased under the
model, and only the visited states remain random):

* partial term: ``E_a[v(s, a) ∇log f(a|s)] = E_a[∂_a v(s, a)] sᵀ ≈ ∂_a v(s, Ks) sᵀ`` (Stein's
  lemma; ``v = E_b Q_L`` with the follower's reaction to ``a``), instead of the score form
  whose ``|∇log f| ~ 1/W`` with ``W = 1e-3``;
* guiding term: ``E_b[B_L(s,a,b) ∇Q_F(s,a,b)] = Cov_b(Q_L(s,a,b), ∇Q_F(s,a,b))`` with
  ``∇Q_F`` of eq. 9 as a quadratic function of the next state
  (:meth:`~bilevel_agents.critics.LQRModelCritic.follower_gradient_quadratic`: the
  follower's published ``V_F`` and the fitted closed loop) and the covariance over the
  follower's action in closed form
  (:meth:`~bilevel_agents.critics.LQRModelCritic.response_covariance`).

``estimator="score"`` keeps BC-HG's own score-function estimate (the same estimate as
``BCHG(br, critic="model")``, with this method's step-size default); ``"pathwise"`` uses the pathwise partial term and, in
the guiding term, Stein's form of each ``V_F ∇log f`` along the sampled episode (the sampled
Benefits stay); ``"expected"`` (default) is the fully conditional form above.

Step size: the optimum lies next to the stability edge ``|0.1 K_1| ≈ 1``, on a ridge whose
width in ``K_1`` is ≈ 0.1, where Adam's normalised constant steps keep jumping across it. The
method's default on the LQR game decays the step size geometrically from ``lr`` = 0.1 to 0.01
over 500 iterations (``lr_final``, ``lr_decay_iterations``: options every leader has).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_agents.estimators.returns import discounted_forward_sum
from bilevel_agents.families import GaussianGameFamily
from bilevel_agents.leaders.bchg import BCHG
from bilevel_envs.utils import check_choice

__all__ = ["ModelBCHG"]

ESTIMATORS = ("expected", "pathwise", "score")


class ModelBCHG(BCHG):
    """BC-HG with the plug-in model critic and model-based control variates (module docstring).

    Args:
        br: a ``GameBestResponse`` over a linear-Gaussian game (the LQR game).
        estimator: ``"expected"``, ``"pathwise"`` or ``"score"`` (module docstring).
        **kwargs: :class:`~bilevel_agents.leader.Leader` arguments (``lr``, ``seed``,
            ``critic`` (default ``"model"``), ``critic_kwargs``, ``episodes``, ...).
    """

    name = "bchg_model"
    default_critic = "model"
    families = (GaussianGameFamily,)
    #: Adam 0.1 decaying to 0.01 over 500 iterations (the family's other defaults stay)
    family_defaults = {GaussianGameFamily: {"lr_final": 0.01, "lr_decay_iterations": 500}}

    def __init__(self, br: Any, *, estimator: str = "expected", **kwargs: Any):
        self.estimator = check_choice("estimator", estimator, ESTIMATORS)
        super().__init__(br, **kwargs)
        needs = ("v_action_grad",) + (("response_covariance", "follower_gradient_quadratic")
                                      if estimator == "expected" else ())
        missing = [m for m in needs if not hasattr(self.critic, m)]
        if estimator != "score" and missing:
            raise ValueError(f"estimator={estimator!r} needs a model critic (critic='model'), "
                             f"got {type(self.critic).__name__} without {missing}")

    # ------------------------------------------------------------------ the estimate
    def gradient_from_batch(self, batch: Any) -> np.ndarray | None:
        """Theorem 2 from the batch: BC-HG's own form (``"score"``) or its conditional
        expectations under the fitted model (module docstring)."""
        if self.estimator == "score":
            return super().gradient_from_batch(batch)
        family = self.family
        metrics = family.batch_metrics(batch)
        metrics.update(self.critic.update(family.critic_data(self, batch), self.br))
        metrics.update(family.learn(self, batch))
        self.last_metrics = metrics
        if family.exploring(self):
            return None
        return self.model_gradient(batch)

    def model_gradient(self, batch: Any) -> np.ndarray:
        """Partial + guiding term with the model's conditional expectations, ``(k·n,)``."""
        br, critic = self.br, self.critic
        s = np.asarray(batch.obs, dtype=np.float64)
        E, T, n = s.shape
        flat = s.reshape(E * T, n)
        K = br.leader_gain
        a_mean = flat @ K.T
        disc = br.gamma_leader ** np.arange(T)
        k = K.shape[0]
        # partial term: Σ_t γ^t ∂_a v(s_t, Ks_t) s_tᵀ
        dv = critic.v_action_grad(flat, a_mean).reshape(E, T, k)
        partial = np.einsum("t,etj,eti->ji", disc, dv, s).reshape(-1) / E
        if self.estimator == "expected":
            quad, lin = critic.follower_gradient_quadratic(br)
            cov = critic.response_covariance(
                flat, batch.leader_actions.reshape(E * T, -1), quad, lin).reshape(E, T, -1)
            guide = np.einsum("t,etd->d", disc, cov) / (br.beta * E)
        else:
            guide = self.pathwise_guiding(batch, flat, a_mean)
        self.last_metrics.update({"partial_norm": float(np.linalg.norm(partial)),
                                  "guiding_norm": float(np.linalg.norm(guide))})
        return partial + guide

    def pathwise_guiding(self, batch: Any, flat: np.ndarray, a_mean: np.ndarray) -> np.ndarray:
        """Alg. 1 line 16 with the sampled Benefits and, for each ``V_F ∇log f`` of eq. 9, its
        conditional expectation ``∂_aV_F(s_k, Ks_k) s_kᵀ`` (published ``V_F``)."""
        br, family = self.br, self.family
        E, T = batch.obs.shape[:2]
        k = a_mean.shape[1]
        h = 1e-2
        dvf = np.empty((E * T, k))
        for j in range(k):
            e = np.zeros(k)
            e[j] = h
            dvf[:, j] = (br.follower_value(flat, a_mean + e)
                         - br.follower_value(flat, a_mean - e)) / (2 * h)
        benefit = family.benefit(self, batch)
        src = (br.gamma_leader ** np.arange(T))[None] * benefit / br.beta
        G = discounted_forward_sum(src, br.gamma_follower) - src     # the k = t term dropped
        return np.einsum("et,etj,eti->ji", G, dvf.reshape(E, T, k),
                         batch.obs).reshape(-1) / E

    # ------------------------------------------------------------------ bookkeeping
    def hparams(self) -> dict[str, Any]:
        """The run's settings, with the estimator."""
        return {**super().hparams(), "estimator": self.estimator}

