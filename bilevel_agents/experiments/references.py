"""Reference values, in one place: exact start and best known objectives, published results.

Every learning result of the suite is reported as a share of the gap between the start value
and the best known value (:func:`gap_share`). ``docs/known_optima.md`` says how each value was
obtained (exact solvers, multi-start ascent on the exact hypergradient); ``tests`` recompute the
start values exactly. The authors' numbers are read from their papers' figures and tables.
"""

from __future__ import annotations

__all__ = ["BUILDING", "CONTEXTUAL_FOUR_ROOMS", "FOUR_ROOMS", "FOUR_ROOMS_AUTHORS", "HPGD_TABLE1",
           "LQR_GAME", "TOY_GAME", "gap_share"]


def gap_share(value: float, start: float, best: float) -> float:
    """The share of the gap from ``start`` to ``best`` closed by ``value`` (1.0 = best known).

    Raises:
        ValueError: ``start == best`` (no gap to close).
    """
    if best == start:
        raise ValueError(f"start and best known value are equal ({start!r}): no gap to close")
    return (value - start) / (best - start)


#: Four-Rooms (BC-HG paper, λ = 5): (β, model slip) → (J at θ ~ N(0, 0.01²), best known J).
#: slip 1/3 is the paper's rule and the suite's default; 0.44 is the authors' solver matrix.
FOUR_ROOMS: dict[tuple[float, float], tuple[float, float]] = {
    (0.001, 1 / 3): (-0.804, 0.608), (0.003, 1 / 3): (-0.796, 0.491),
    (0.005, 1 / 3): (-0.761, 0.623), (0.001, 0.44): (-0.741, 0.768),
    (0.003, 0.44): (-0.726, 0.616), (0.005, 0.44): (-0.667, 1.539),
}

#: The BC-HG authors' published end-of-curve Four-Rooms values (their dynamics, slip 0.44):
#: (β, batch) → method → J (last-1000-iteration mean, best grid point, 10 seeds).
FOUR_ROOMS_AUTHORS: dict[tuple[float, int], dict[str, float]] = {
    (0.001, 100): dict(bchg=0.668, hpgd_mc=-0.011, hpgd_sa=0.018, hpgd_oracle=0.689,
                       sobirl=0.0006, naive_pgd=0.0006),
    (0.001, 200): dict(bchg=0.628, hpgd_mc=-0.076, hpgd_sa=0.001, hpgd_oracle=0.698,
                       sobirl=0.0006, naive_pgd=0.0006),
    (0.001, 400): dict(bchg=0.556, hpgd_mc=0.048, hpgd_sa=0.001, hpgd_oracle=0.701,
                       sobirl=0.0006, naive_pgd=0.0006),
    (0.001, 1000): dict(bchg=0.195, hpgd_mc=0.198, hpgd_sa=0.001, hpgd_oracle=0.700,
                        sobirl=0.0006, naive_pgd=0.0006),
    (0.003, 100): dict(bchg=0.548, hpgd_mc=0.108, hpgd_sa=0.413, hpgd_oracle=0.524,
                       sobirl=0.001, naive_pgd=0.001),
    (0.003, 200): dict(bchg=0.556, hpgd_mc=0.182, hpgd_sa=0.140, hpgd_oracle=0.523,
                       sobirl=0.001, naive_pgd=0.001),
    (0.003, 400): dict(bchg=0.517, hpgd_mc=0.239, hpgd_sa=0.001, hpgd_oracle=0.526,
                       sobirl=0.001, naive_pgd=0.001),
    (0.003, 1000): dict(bchg=0.265, hpgd_mc=0.265, hpgd_sa=0.001, hpgd_oracle=0.532,
                        sobirl=0.001, naive_pgd=0.001),
    (0.005, 100): dict(bchg=1.333, hpgd_mc=1.195, hpgd_sa=0.838, hpgd_oracle=0.847,
                       sobirl=0.018, naive_pgd=0.018),
    (0.005, 200): dict(bchg=1.307, hpgd_mc=1.205, hpgd_sa=0.831, hpgd_oracle=0.782,
                       sobirl=0.018, naive_pgd=0.018),
    (0.005, 400): dict(bchg=1.317, hpgd_mc=1.264, hpgd_sa=1.071, hpgd_oracle=0.785,
                       sobirl=0.018, naive_pgd=0.018),
    (0.005, 1000): dict(bchg=1.054, hpgd_mc=1.213, hpgd_sa=0.813, hpgd_oracle=0.955,
                        sobirl=0.018, naive_pgd=0.018),
}

#: Building thermal control (β = 0.1, 100-step objective from s0 ~ N(0, 25 I)).
BUILDING = {"start": -261.96, "best": -162.50,
            "authors": {"bchg": -196.0, "naive_pgd": -211.0, "hpgd_td": -237.0,
                        "hpgd_mc": -267.0}}

#: Toy Markov game (β = 0.05): R → (best undiscounted 150-step return, best discounted), paper
#: Bellman form; the authors' BC-HG reaches 59.2 on R = 2 (official form, optimum 59.481).
TOY_GAME = {2: {"best_undiscounted": 59.750, "best_discounted": 31.166},
            1: {"best_undiscounted": 52.324, "best_discounted": 27.316},
            "authors": {"bchg": 59.2, "naive_pgd": 32.3, "biac": 32.0}}

#: LQR Markov game (100-step undiscounted leader return from s0 = (1, 0)).
LQR_GAME = {"start": 0.0149, "best": 18.43, "authors": {"bchg": 0.13, "naive_pgd": 0.02}}

#: Contextual Four-Rooms of the HPGD paper (HPGD's matrix, slip 0.44): (β, λ) → (J at the
#: start, J with no incentive, best known J).
CONTEXTUAL_FOUR_ROOMS: dict[tuple[float, int], tuple[float, float, float]] = {
    (0.001, 1): (0.288, 0.410, 1.177), (0.001, 3): (0.014, 0.410, 0.947),
    (0.001, 5): (-0.261, 0.410, 0.745), (0.003, 1): (0.200, 0.321, 1.018),
    (0.003, 3): (-0.068, 0.321, 0.798), (0.003, 5): (-0.336, 0.321, 0.581),
    (0.005, 1): (0.182, 0.299, 1.474), (0.005, 3): (-0.057, 0.299, 1.354),
    (0.005, 5): (-0.297, 0.299, 1.236),
}

#: HPGD's README Table 1 (Thoma et al. 2024): (β, λ) → method → (mean, standard error).
HPGD_TABLE1: dict[tuple[float, int], dict[str, tuple[float, float]]] = {
    (0.001, 1): {"hpgd": (0.91, 0.088), "amd": (0.58, 0.000), "zero_order": (0.59, 0.059)},
    (0.001, 3): {"hpgd": (0.51, 0.006), "amd": (0.51, 0.000), "zero_order": (0.50, 0.005)},
    (0.001, 5): {"hpgd": (0.46, 0.006), "amd": (0.46, 0.003), "zero_order": (0.46, 0.007)},
    (0.003, 1): {"hpgd": (0.95, 0.002), "amd": (1.00, 0.000), "zero_order": (0.91, 0.048)},
    (0.003, 3): {"hpgd": (0.73, 0.001), "amd": (0.39, 0.000), "zero_order": (0.40, 0.028)},
    (0.003, 5): {"hpgd": (0.29, 0.003), "amd": (0.32, 0.000), "zero_order": (0.32, 0.002)},
    (0.005, 1): {"hpgd": (1.17, 0.011), "amd": (1.28, 0.003), "zero_order": (1.15, 0.026)},
    (0.005, 3): {"hpgd": (1.01, 0.002), "amd": (1.13, 0.004), "zero_order": (1.02, 0.027)},
    (0.005, 5): {"hpgd": (0.87, 0.003), "amd": (0.97, 0.009), "zero_order": (0.79, 0.027)},
}
