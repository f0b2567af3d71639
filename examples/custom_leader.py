"""Write your own leader: an SPSA (simultaneous-perturbation) leader in ~30 lines.

It uses the public API only: the best-response wrapper's ``config``/``set_config`` and
``rollout`` (the follower re-solves itself whenever θ changes), and trains through the same
loop (:func:`bilevel_agents.train`: progress bar, exact objective, CSV, checkpoints) and CLI
as BC-HG.

    python examples/custom_leader.py            # trains it, then runs it through the CLI
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401
from bilevel_agents import LEADERS, Leader
from bilevel_agents.cli import main as cli
from bilevel_envs.wrappers import BestResponse


class SPSALeader(Leader):
    """Zeroth-order leader: ĝ = (Ĵ(θ + cΔ) − Ĵ(θ − cΔ)) / (2c) · Δ with Rademacher Δ and
    Ĵ the mean discounted leader return of sampled episodes (no hypergradient theory needed,
    and no model: the baseline any hypergradient method should beat)."""

    name = "spsa"

    def __init__(self, br, *, perturbation: float = 0.5, batch_size: int = 2000, **kwargs):
        super().__init__(br, **kwargs)
        if not perturbation > 0:
            raise ValueError(f"perturbation must be > 0, got {perturbation!r}")
        self.perturbation, self.batch_size = float(perturbation), int(batch_size)

    def _leader_return(self, theta: np.ndarray) -> float:
        self.br.set_config(theta)  # the follower best-responds to the perturbed θ
        batch = self.br.rollout(self.batch_size, n_envs=4, rng=self.rng)
        weights = self.br.problem.gamma_leader ** batch.time
        return float((weights * batch.r_leader).sum() / max(batch.n_finished_episodes, 1))

    def estimate_gradient(self) -> np.ndarray:
        theta = self.theta
        delta = self.rng.choice([-1.0, 1.0], size=theta.shape)
        c = self.perturbation
        diff = self._leader_return(theta + c * delta) - self._leader_return(theta - c * delta)
        self.br.set_config(theta)  # back to the current θ
        return diff / (2 * c) * delta


if __name__ == "__main__":
    br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)
    history = SPSALeader(br, lr=0.1, seed=0).learn(200)
    print(f"SPSA after 200 iterations: J = {history[-1]['objective']:.3f} "
          f"(start {history[0]['objective']:.3f})")
    # The CLI finds any leader registered by name:
    LEADERS[SPSALeader.name] = SPSALeader
    cli(["train", "--leader", "spsa", "--beta", "0.005", "--iterations", "50", "--seeds", "0-1",
         "--lr", "0.1", "--out", "results/custom_leader", "--tail", "10"])
    cli(["evaluate", "results/custom_leader", "--tail", "10"])
