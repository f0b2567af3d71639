"""Average BC-HG's and HPGD's hypergradient estimates on the tabular tax economy at the best known
θ (β = 0.1) beside the exact hypergradient, with Monte Carlo and with exact leader values
(docs/results/hpgd.md, "Tax design").

    python examples/tax_design/estimator_bias.py      # about 10 CPU-minutes
"""

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_agents import BCHG, HPGD
from bilevel_agents.exact import hypergradient
from bilevel_agents.exact.tabular import tabular_hypergradient
from bilevel_envs.wrappers import BestResponse

#: the best known θ of docs/known_optima.md (Tax Design, β = 0.1)
THETA_BEST = np.array([-7.517129834888709, -8.253715954150307, -5.826702000540138,
                       -0.7726323435527718])

if __name__ == "__main__":
    hpgd_tax_code = {"leader_value": "return", "score_clip": 1.0,
                     "response_coordinates": [0, 1, 2]}
    for cls, kwargs, n in [(BCHG, {"critic": "mc", "batch_size": 2000, "n_envs": 10}, 200),
                           (HPGD, {"batch_size": 20000, "n_envs": 100}, 40),
                           (HPGD, {"batch_size": 20000, "n_envs": 100, **hpgd_tax_code}, 40),
                           (BCHG, {"critic": "model", "batch_size": 2000, "n_envs": 10}, 200),
                           (BCHG, {"critic": "exact", "batch_size": 2000, "n_envs": 10}, 200)]:
        br = BestResponse(gym.make("BiLevel/TaxDesignTabular-v0"), beta=0.1)
        leader = cls(br, seed=0, theta0=THETA_BEST.copy(), contexts="per_episode", **kwargs)
        exact = hypergradient(br)
        if cls is HPGD and "response_coordinates" in kwargs:  # its target for the income tax
            partial = tabular_hypergradient(br.problem, br.config, br.policy, br.beta,
                                            response=False)
            print(f"exact partial derivative (follower held fixed): {np.round(partial, 4)}")
        est = np.array([leader.estimate_gradient() for _ in range(n)])
        mean, se = est.mean(axis=0), est.std(axis=0, ddof=1) / np.sqrt(n)
        values = kwargs.get("critic", "mc")  # HPGD's tabular default is Monte Carlo too
        variant = ", tax code" if "score_clip" in kwargs else ""
        print(f"{cls.__name__} ({values} leader values{variant}): exact {np.round(exact, 4)}, "
              f"mean of {n} estimates {np.round(mean, 3)} ± {np.round(se, 3)} (SE)")
