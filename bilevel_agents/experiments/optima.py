"""Best known values: multi-start ascent on the exact hypergradient (a lower bound on the optimum).

The leader's objective has several local optima (docs/known_optima.md), so one ascent from the
paper's start finds the nearest one only. :func:`best_known_value` runs many::

    python -m bilevel_agents.experiments.optima --env BiLevel/ContextualFourRooms-v0 \\
        --beta 0.003 --env-kwargs penalty_weight=3 --json best.json

1. **Starts** (:func:`start_points`): the paper's start ``θ0 + N(0, 0.01²)`` (``θ0`` the
   problem's default config), ``random`` draws ``θ0 + N(0, σ²)`` for each σ in ``scales``,
   *coordinate* starts ``θ0 + a·e_i`` (on Four-Rooms: a share ``e^a / (e^a + 104)`` of the
   budget on the single cell ``i``; all coordinates, or ``coordinates`` of them drawn at
   random) and, on Four-Rooms, the no-incentive point (all mass on the unused slot).
2. **Screening**: every start takes ``screen`` steps; the ``keep`` best (by the best ``J``
   seen) go on.
3. **Refinement**: those continue up to ``iterations`` steps in all, until the stopping rule:
   the best ``J`` has not improved by more than ``tol`` in ``patience`` steps, or
   ``|∇J| < grad_tol``.

Steps: clip the exact hypergradient (:func:`~bilevel_agents.exact.hypergradient`) to norm
``max_grad_norm``, then Adam (default) or SGD with step ``lr``, projected on ``config_space``;
the follower re-solves at every θ (warm-started). The value reported is the best exact
``J`` seen, re-evaluated at its θ; ``per_context`` adds ``J_ξ`` on contextual problems.
Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_agents.exact import hypergradient, leader_objective, leader_values
from bilevel_agents.families.tabular import is_contextual
from bilevel_agents.leader import clip_by_global_norm
from bilevel_envs.envs.four_rooms import FourRoomsEnv
from bilevel_envs.utils import check_choice, check_float, check_int

__all__ = ["AscentRun", "OptimumResult", "best_known_value", "main", "start_points"]

OPTIMIZERS = ("adam", "sgd")


def start_points(br: Any, rng: np.random.Generator, *, random: int = 8,
                 scales: Sequence[float] = (0.3, 1.0, 3.0), coordinates: int | None = None,
                 coordinate_logit: float = 5.0) -> list[tuple[str, np.ndarray]]:
    """The labelled starts of the search (module docstring, step 1)."""
    problem = br.problem
    space = br.config_space
    theta0 = np.asarray(problem.default_config(), dtype=np.float64).reshape(space.shape)
    d = theta0.size
    starts = [("init", theta0 + rng.normal(0.0, 0.01, size=space.shape))]
    if isinstance(problem, FourRoomsEnv):
        none = np.zeros(space.shape)
        none.ravel()[-1] = 20.0  # softmax mass ~1 - 2e-7 on the unused slot
        starts.append(("no_incentive", none))
    for scale in scales:
        starts += [(f"random{scale:g}_{k}", theta0 + rng.normal(0.0, scale, size=space.shape))
                   for k in range(int(random))]
    picks = np.arange(d) if coordinates is None or coordinates >= d else \
        np.sort(rng.choice(d, size=int(coordinates), replace=False))
    for i in picks:
        theta = theta0.copy()
        theta.ravel()[i] += coordinate_logit
        starts.append((f"coordinate{int(i)}", theta))
    return [(label, np.clip(t, space.low, space.high)) for label, t in starts]


@dataclass
class AscentRun:
    """One ascent: its start, the optimiser's state, the best value seen and where."""

    label: str
    theta: np.ndarray
    optimizer: str = "adam"
    lr: float = 0.05
    max_grad_norm: float | None = 1.0
    steps: int = 0
    best: float = -math.inf
    best_theta: np.ndarray | None = None
    best_step: int = 0
    start_value: float = math.nan
    last_grad_norm: float = math.inf
    stopped: str = ""
    _m: np.ndarray | None = field(default=None, repr=False)
    _v: np.ndarray | None = field(default=None, repr=False)

    def advance(self, br: Any, n: int, *, tol: float, patience: int,
                grad_tol: float) -> None:
        """Up to ``n`` more steps (fewer if the stopping rule fires)."""
        space = br.config_space
        if self._m is None:
            self._m, self._v = np.zeros_like(self.theta), np.zeros_like(self.theta)
        for _ in range(int(n)):
            if self.stopped:
                return
            br.set_config(self.theta)
            value = leader_objective(br)
            if self.steps == 0:
                self.start_value = value
            if value > self.best + tol:
                self.best_step = self.steps
            if value > self.best:
                self.best, self.best_theta = value, self.theta.copy()
            grad = hypergradient(br)
            self.last_grad_norm = float(np.linalg.norm(grad))
            if self.last_grad_norm < grad_tol:
                self.stopped = "gradient"
                return
            if self.steps - self.best_step >= patience:
                self.stopped = "patience"
                return
            step = clip_by_global_norm(grad, self.max_grad_norm)
            self.steps += 1
            if self.optimizer == "adam":
                b1, b2 = 0.9, 0.999
                self._m = b1 * self._m + (1 - b1) * step
                self._v = b2 * self._v + (1 - b2) * step**2
                step = (self._m / (1 - b1**self.steps)) / (
                    np.sqrt(self._v / (1 - b2**self.steps)) + 1e-8)
            self.theta = np.clip(self.theta + self.lr * step, space.low, space.high)

    def record(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {"label": self.label, "start_value": self.start_value, "best": self.best,
                "steps": self.steps, "best_step": self.best_step, "stopped": self.stopped,
                "last_grad_norm": self.last_grad_norm}


@dataclass
class OptimumResult:
    """The best value found, its θ and start, per-context values and every run's record."""

    value: float
    theta: np.ndarray
    label: str
    per_context: list[float] | None
    runs: list[dict[str, Any]]
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Plain values for JSON (θ as a list)."""
        out = asdict(self)
        out["theta"] = self.theta.tolist()
        return out


def _per_context(br: Any) -> list[float] | None:
    problem = br.problem
    if not is_contextual(problem):
        return None
    _, v_l = leader_values(problem.tabular_model(), br.policy, problem.gamma_leader)
    return [float(problem.context_mu0(k) @ v_l) for k in range(problem.n_contexts)]


def best_known_value(br: Any, *, seed: int = 0, random: int = 8,
                     scales: Sequence[float] = (0.3, 1.0, 3.0), coordinates: int | None = None,
                     coordinate_logit: float = 5.0, screen: int = 60, keep: int = 4,
                     iterations: int = 2000, optimizer: str = "adam", lr: float = 0.05,
                     max_grad_norm: float | None = 1.0, tol: float = 1e-6,
                     patience: int = 300, grad_tol: float = 1e-9,
                     starts: list[tuple[str, np.ndarray]] | None = None,
                     progress: bool = False) -> OptimumResult:
    """Multi-start ascent on the exact hypergradient (module docstring).

    Args:
        br: a best response whose problem has an exact objective and hypergradient; its θ and
            follower are restored afterwards.
        seed: seeds the random starts and the choice of coordinates.
        random, scales, coordinates, coordinate_logit: the starts (:func:`start_points`);
            ``starts`` replaces them by labelled θs of your own.
        screen: steps of every start before the cut; ``keep``: starts refined after it.
        iterations: steps of a refined start in all; ``optimizer``, ``lr``,
            ``max_grad_norm``: the steps; ``tol``, ``patience``, ``grad_tol``: the stopping
            rule.
        progress: print one line per start.

    Raises:
        ValueError: a bad option, or a problem without an exact hypergradient.
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    screen, keep = check_int("screen", screen, 1), check_int("keep", keep, 1)
    iterations = check_int("iterations", iterations, 1)
    patience = check_int("patience", patience, 1)
    lr = check_float("lr", lr, low=0.0, low_open=True)
    settings = {"seed": seed, "random": random, "scales": list(scales),
                "coordinates": coordinates, "coordinate_logit": coordinate_logit,
                "screen": screen, "keep": keep, "iterations": iterations,
                "optimizer": optimizer, "lr": lr, "max_grad_norm": max_grad_norm, "tol": tol,
                "patience": patience, "grad_tol": grad_tol}
    saved = br.state_dict()
    try:
        if starts is None:
            starts = start_points(br, np.random.default_rng(seed), random=random,
                                  scales=scales, coordinates=coordinates,
                                  coordinate_logit=coordinate_logit)
        runs = [AscentRun(label, np.array(theta, dtype=np.float64), optimizer=optimizer,
                          lr=lr, max_grad_norm=max_grad_norm) for label, theta in starts]
        rule = {"tol": tol, "patience": patience, "grad_tol": grad_tol}
        for run in runs:
            run.advance(br, min(screen, iterations), **rule)
            if progress:
                print(f"screen {run.label}: start {run.start_value:.4f} best {run.best:.4f}",
                      flush=True)
        for run in sorted(runs, key=lambda r: -r.best)[:keep]:
            run.advance(br, iterations - run.steps, **rule)
            if progress:
                print(f"refine {run.label}: best {run.best:.4f} after {run.steps} steps "
                      f"({run.stopped or 'iterations'})", flush=True)
        winner = max(runs, key=lambda r: r.best)
        br.set_config(winner.best_theta)
        value = leader_objective(br)
        per_context = _per_context(br)
    finally:
        br.load_state_dict(saved)
    return OptimumResult(value=float(value), theta=winner.best_theta.copy(),
                         label=winner.label, per_context=per_context,
                         runs=[r.record() for r in runs], settings=settings)


# ---------------------------------------------------------------------- command
def _kwargs(items: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--env-kwargs takes key=value, got {item!r}")
        key, text = item.split("=", 1)
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bilevel_agents.experiments.optima --env ... --beta ...`` (module docstring)."""
    from bilevel_agents.experiments.sweep import make_best_response

    p = argparse.ArgumentParser(prog="python -m bilevel_agents.experiments.optima",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", required=True, help="a registered Gymnasium id or a game")
    p.add_argument("--beta", type=float, required=True)
    p.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="JSON values")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random", type=int, default=8, help="random starts per scale")
    p.add_argument("--scales", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    p.add_argument("--coordinates", type=int, help="coordinate starts (default: all)")
    p.add_argument("--coordinate-logit", type=float, default=5.0)
    p.add_argument("--screen", type=int, default=60)
    p.add_argument("--keep", type=int, default=4)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--patience", type=int, default=300)
    p.add_argument("--json", help="write the result here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        br = make_best_response(args.env, args.beta, _kwargs(args.env_kwargs))
        result = best_known_value(
            br, seed=args.seed, random=args.random, scales=args.scales,
            coordinates=args.coordinates, coordinate_logit=args.coordinate_logit,
            screen=args.screen, keep=args.keep, iterations=args.iterations,
            optimizer=args.optimizer, lr=args.lr, max_grad_norm=args.max_grad_norm,
            tol=args.tol, patience=args.patience, progress=not args.quiet)
    print(f"best known J = {result.value:.6f} (start {result.label!r}"
          + ("" if result.per_context is None else
             ", per context " + ", ".join(f"{v:.4f}" for v in result.per_context)) + ")")
    if isinstance(br.problem, FourRoomsEnv):
        share = np.exp(result.theta - result.theta.max())
        share /= share.sum()
        top = np.argsort(share[:-1])[::-1][:3]
        cells = ", ".join(f"{tuple(int(x) for x in br.problem.cells[c])}: "
                          f"{share[c] * br.problem.incentive_budget:.3f}" for c in top)
        print(f"incentive on the top cells (of budget {br.problem.incentive_budget}): {cells}; "
              f"unused {share[-1] * br.problem.incentive_budget:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"env": args.env, "beta": args.beta, "env_kwargs": _kwargs(args.env_kwargs),
             **result.to_json()}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
