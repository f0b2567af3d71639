"""Train a Stable-Baselines3 PPO leader against a best-responding follower (a black-box baseline).

``GameBestResponse(game, beta)`` makes the toy Markov game a single-agent Gymnasium env for the
leader (obs = state, action = leader action, reward = r_L; the follower's soft best response
acts inside). The follower responds to the leader's *policy*, so a callback hands PPO's current
action probabilities to the follower before every rollout (``set_leader_policy``), i.e. the
follower re-solves once per PPO iteration, as in the paper's outer loop. PPO's gradient ignores
how the follower's response moves with the leader's policy (the second term of Theorem 2), so
it behaves like NAIVE-PGD.

    PYTHONPATH=. python examples/sb3_leader.py --steps 45000 --reward 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from bilevel_agents.exact.games import toy_objective
from bilevel_envs.games import toy_game_v0
from bilevel_envs.wrappers import GameBestResponse


def leader_probs(model: PPO, n_states: int) -> np.ndarray:
    """PPO's action probabilities ``f(a|s)`` for every state, shape ``(S, A)``."""
    obs = torch.arange(n_states)
    with torch.no_grad():
        dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs.numpy())[0])
        return dist.distribution.probs.cpu().numpy().astype(np.float64)


class FollowerResponds(BaseCallback):
    """Before each rollout, the follower best-responds to PPO's current policy."""

    def __init__(self, br):
        super().__init__()
        self.br = br
        self.history: list[float] = []

    def _on_rollout_start(self) -> None:
        f = leader_probs(self.model, self.br.problem.n_states)
        self.br.set_leader_policy(f / f.sum(axis=1, keepdims=True))
        self.history.append(float(f[1, 0]))

    def _on_step(self) -> bool:
        return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=45_000)
    ap.add_argument("--reward", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    br = GameBestResponse(toy_game_v0.env(reward=args.reward), beta=0.05, bootstrap="official")
    model = PPO("MlpPolicy", br, n_steps=450, batch_size=90, gamma=0.99, seed=args.seed,
                verbose=0)
    cb = FollowerResponds(br)
    model.learn(total_timesteps=args.steps, callback=cb)
    f = leader_probs(model, 3)
    ret = toy_objective(f / f.sum(1, keepdims=True), reward=args.reward, bootstrap="official",
                        horizon=150, gamma=1.0)
    print(f"PPO leader after {args.steps} steps: f(0|A) = {f[1, 0]:.3f}, exact 150-step leader "
          f"return {ret:.2f} (start f(0|A) = {cb.history[0]:.3f})")


if __name__ == "__main__":
    main()
