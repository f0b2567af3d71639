"""Estimator accuracy on Four-Rooms: bias, variance and cosine of each method's hypergradient
estimate against the exact hypergradient, at fixed θ, for batch sizes 100 … 10^4.

A measurement the paper does not publish. For each θ (the paper's start θ ~ N(0, 0.01²)
and a learned θ) and each method, many independent estimates ``ĝ_i = leader.estimate_gradient()``
(raw, before clipping) are drawn at the *same* θ and compared with ``g = exact.hypergradient``:

* relative bias ``‖mean ĝ − g‖ / ‖g‖`` (with its noise floor ``√(tr Cov / R) / ‖g‖``: a bias
  below the floor is not resolved),
* relative variance ``tr Cov(ĝ) / ‖g‖²`` (the mean squared distance to the mean, per ‖g‖²),
* mean cosine ``E cos(ĝ_i, g)`` (what one clipped SGD step sees) and the cosine of the mean.

Critics. HPGD (MC) and HPGD (oracle) re-estimate from each batch. The SARSA critics (BC-HG,
HPGD (SA)) carry a table across iterations, so a cold N(0, 1) table says little: before the
measurement the critic is warmed up *at the fixed θ* on ``--warmup`` transitions (batches of the
measured size), and it keeps learning from each measured batch (as in training). This is
optimistic compared with training, where θ moves under the critic. BC-HG with the exact leader
critic is shown as the reference for the estimator alone.

    python -m bilevel_agents.benchmarks.estimator_accuracy          # writes --out .md/.png/.json
    python -m bilevel_agents.benchmarks.estimator_accuracy --quick  # a smoke run (printed only)

The learned θ is the final θ of the best BC-HG grid point (seed 0) under ``--results`` (a
``bilevel train`` folder, default ``results/four_rooms``), else that of 2000 BC-HG iterations
trained here (200 with ``--quick``).

``--env BiLevel/ContextualFourRooms-v0 --env-kwargs penalty_weight=3`` measures the same on
HPGD's contextual task: there every estimator targets the hypergradient of the context mixture
(the exact ``J = ½(J_G1 + J_G2)``), each episode drawing its goal (``contexts="per_episode"``)::

    python -m bilevel_agents.benchmarks.estimator_accuracy --env BiLevel/ContextualFourRooms-v0 \
        --env-kwargs penalty_weight=3 --beta 0.003 --out docs/results/estimator_accuracy_contextual
"""

from __future__ import annotations

import glob
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401
from bilevel_agents import BCHG, HPGD, NaivePGD
from bilevel_agents.benchmarks.harness import Report, Stopwatch, parser, single_threaded, timed
from bilevel_agents.exact import hypergradient, leader_objective
from bilevel_envs.wrappers import BestResponse

# method label -> (class, kwargs, uses a carried SARSA critic)
METHODS = {
    "BC-HG (SARSA)": (BCHG, {"sarsa_alpha": 0.5}, True),
    "BC-HG (exact Q_L)": (BCHG, {"critic": "exact"}, False),
    "HPGD (MC)": (HPGD, {"critic": "mc"}, False),
    "HPGD (SA)": (HPGD, {"critic": "sarsa", "sarsa_alpha": 0.5}, True),
    "HPGD (oracle)": (HPGD, {"oracle_batch_size": 10_000}, False),
    "NAIVE-PGD = SoBiRL": (NaivePGD, {}, False),
}


def n_envs_for(batch: int) -> int:
    """The authors' layout: streams of up to 200 steps (100 → 1×100, 1000 → 5×200)."""
    return max(1, batch // 200)


ENV = "BiLevel/FourRooms-v0"


def make_br(beta: float, env: str = ENV, env_kwargs: dict | None = None) -> BestResponse:
    """The best response of the measured problem."""
    return BestResponse(gym.make(env, **(env_kwargs or {})), beta=beta)


def learned_theta(beta: float, root: str = "results/four_rooms",
                  iterations: int = 2000, env: str = ENV,
                  env_kwargs: dict | None = None) -> tuple[np.ndarray, str]:
    """Final θ of the best BC-HG grid point (seed 0) under ``root`` (Four-Rooms), else that of
    ``iterations`` BC-HG iterations trained here."""
    best, source = None, ""
    pattern = f"{root}/beta{beta}_slip0.33/bchg_*/seed0/summary.json" if env == ENV else ""
    for path in glob.glob(pattern) if pattern else []:
        s = json.loads(Path(path).read_text())
        if "final_theta" in s and (best is None or s["tail_mean_objective"] > best[0]):
            best, source = (s["tail_mean_objective"], np.array(s["final_theta"])), path
    if best is not None:
        return best[1], source
    br = make_br(beta, env, env_kwargs)
    leader = BCHG(br, lr=0.1, sarsa_alpha=0.5, seed=0)
    leader.learn(iterations, progress=False)
    return leader.theta, f"BC-HG lr 0.1, α_SA 0.5, seed 0, {iterations} iterations (trained here)"


def measure(beta: float, theta: np.ndarray, method: str, batch: int, reps: int,
            warmup: int, seed: int, env: str = ENV,
            env_kwargs: dict | None = None) -> dict[str, float]:
    cls, kwargs, carried = METHODS[method]
    br = make_br(beta, env, env_kwargs)
    leader = cls(br, batch_size=batch, n_envs=n_envs_for(batch), theta0=theta, seed=seed,
                 **kwargs)
    g = hypergradient(br)
    if carried:
        for _ in range(max(warmup // batch, 1)):
            leader.estimate_gradient()  # updates the critic; θ stays fixed
    estimates: list[np.ndarray] = []
    seconds, _ = timed(lambda: estimates.append(leader.estimate_gradient()), reps)
    est = np.array(estimates)
    mean = est.mean(0)
    gn = np.linalg.norm(g)
    tr_cov = float(((est - mean) ** 2).sum(1).mean())
    norms = np.linalg.norm(est, axis=1)
    cos_i = (est @ g) / np.maximum(norms, 1e-300) / gn
    return {"bias": float(np.linalg.norm(mean - g) / gn),
            "bias_floor": float(np.sqrt(tr_cov / reps) / gn),
            "variance": tr_cov / gn ** 2,
            "mean_cos": float(cos_i.mean()),
            "cos_of_mean": float(mean @ g / max(np.linalg.norm(mean), 1e-300) / gn),
            "grad_norm": float(gn), "seconds_per_estimate": seconds, "reps": reps}


def table(results: list[dict], thetas: dict[str, dict]) -> str:
    lines = []
    for name, info in thetas.items():
        lines += [f"### θ = {name}: J = {info['objective']:.3f}, ‖∇J‖ = {info['grad_norm']:.4g}",
                  "", "| method | batch | rel. bias (noise floor) | rel. variance | "
                  "mean cos(ĝ, ∇J) | cos(mean ĝ, ∇J) | estimates |",
                  "|---|---|---|---|---|---|---|"]
        for r in (r for r in results if r["theta"] == name):
            lines.append(f"| {r['method']} | {r['batch']} | {r['bias']:.3g} ({r['bias_floor']:.2g})"
                         f" | {r['variance']:.3g} | {r['mean_cos']:.3f} | {r['cos_of_mean']:.3f}"
                         f" | {r['reps']} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: list[dict], thetas: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("bias", "relative bias ‖E ĝ − ∇J‖/‖∇J‖", True),
            ("variance", "relative variance tr Cov/‖∇J‖²", True),
            ("mean_cos", "mean cos(ĝ, ∇J)", False)]
    fig, axes = plt.subplots(len(thetas), 3, figsize=(13, 3.6 * len(thetas)), squeeze=False)
    for i, name in enumerate(thetas):
        for j, (key, label, log) in enumerate(keys):
            ax = axes[i, j]
            for method in METHODS:
                rows = [r for r in results if r["theta"] == name and r["method"] == method]
                if not rows:
                    continue
                x, y = [r["batch"] for r in rows], [r[key] for r in rows]
                line, = ax.plot(x, y, "-", label=method)
                # hollow marker: a bias within 2 noise floors is not resolved
                solid = [key != "bias" or r["bias"] > 2 * r["bias_floor"] for r in rows]
                for xi, yi, full in zip(x, y, solid):
                    ax.plot(xi, yi, "o", ms=5, color=line.get_color(),
                            mfc=line.get_color() if full else "white")
            ax.set_xscale("log")
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("batch size (transitions)")
            ax.set_title(f"{label}\nθ = {name}", fontsize=9)
            ax.grid(alpha=0.3)
    axes[0, 2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, quick_help="few estimates, batches 100 and 1000, print only")
    p.add_argument("--beta", type=float, default=0.001)
    p.add_argument("--env", default=ENV, choices=[ENV, "BiLevel/ContextualFourRooms-v0"])
    p.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                   help="env keyword arguments, e.g. penalty_weight=3")
    p.add_argument("--batches", default="100,400,1000,10000")
    p.add_argument("--reps", type=int, default=400, help="estimates at batch 100 (fewer "
                   "for larger batches: reps·100/batch, at least --min-reps)")
    p.add_argument("--min-reps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=200_000, help="SARSA warm-up transitions")
    p.add_argument("--results", default="results/four_rooms",
                   help="a BC-HG results folder to take the learned θ from")
    p.add_argument("--out", default="docs/results/estimator_accuracy",
                   help="path stem of the .md, .png and .json written (not with --quick)")
    p.add_argument("--replot", action="store_true", help="redraw the figure from the JSON")
    args = p.parse_args(argv)
    if args.replot:
        out = Path(args.out)
        data = json.loads((out.parent / (out.name + ".json")).read_text())
        plot(data["results"], list(data["info"]), out.parent / (out.name + ".png"))
        return 0
    report = Report("estimator_accuracy", args)
    with single_threaded(args.blas_threads):
        measure_all(args)
    return report.finish()


def measure_all(args) -> None:
    """The measurement of :func:`main` (arguments parsed): print, and write unless quick."""
    if args.quick:
        args.reps, args.min_reps, args.warmup, args.batches = 40, 10, 20_000, "100,1000"
    batches = [int(b) for b in args.batches.split(",")]
    env_kwargs = {k: float(v) for k, v in (item.split("=", 1) for item in args.env_kwargs)}
    theta_learned, source = learned_theta(args.beta, args.results,
                                          200 if args.quick else 2000, args.env, env_kwargs)
    print(f"{args.env} {env_kwargs or ''} β = {args.beta}; learned θ: {source}", flush=True)
    thetas = {"start": np.random.default_rng(0).normal(0.0, 0.01, 105), "learned": theta_learned}
    br = make_br(args.beta, args.env, env_kwargs)
    info = {name: {"objective": leader_objective(br, th),
                   "grad_norm": float(np.linalg.norm(hypergradient(br, th)))}
            for name, th in thetas.items()}
    results = []
    clock = Stopwatch()
    for name, th in thetas.items():
        for method in METHODS:
            for batch in batches:
                reps = max(args.min_reps, args.reps * 100 // batch)
                r = measure(args.beta, th, method, batch, reps, args.warmup, seed=1,
                            env=args.env, env_kwargs=env_kwargs)
                results.append({"theta": name, "method": method, "batch": batch, **r})
                print(f"{name:8s} {method:20s} {batch:6d}  bias {r['bias']:.3g} "
                      f"(floor {r['bias_floor']:.2g})  var {r['variance']:.3g}  "
                      f"cos {r['mean_cos']:.3f}  cos(mean) {r['cos_of_mean']:.3f}  "
                      f"[{clock.seconds:.0f}s]", flush=True)
    text = table(results, info)
    print(text)
    if args.quick:
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md, png, js = (out.parent / (out.name + ext) for ext in (".md", ".png", ".json"))
    plot(results, list(thetas), png)
    task = ("Four-Rooms" if args.env == ENV else "the contextual Four-Rooms") + (
        f" ({', '.join(f'{k} = {v:g}' for k, v in env_kwargs.items())})" if env_kwargs else "")
    flags = "" if args.env == ENV else f" --env {args.env}" + (
        " --env-kwargs " + " ".join(args.env_kwargs) if args.env_kwargs else "")
    for flag, value, default in (("reps", args.reps, 400), ("batches", args.batches,
                                  "100,400,1000,10000"), ("warmup", args.warmup, 200_000)):
        flags += f" --{flag} {value}" if value != default else ""
    header = (f"# Estimator accuracy on {task} (β = {args.beta})\n\n"
              f"Generated by `python -m bilevel_agents.benchmarks.estimator_accuracy --beta "
              f"{args.beta}{flags} --out {args.out}` "
              f"({time.strftime('%Y-%m-%d')}). Learned θ: {source}. SARSA critics warmed up on "
              f"{args.warmup} transitions at the fixed θ (α_SA 0.5), then updated by every "
              f"measured batch. Batches of n transitions use max(1, n/200) streams (the "
              f"authors' layout). HPGD (oracle) adds 10^4 transitions per estimate.\n\n")
    js.write_text(json.dumps({"info": info, "results": results}, indent=1))
    md.write_text(header + text + f"\n![accuracy]({png.name})\n")
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    sys.exit(main())
