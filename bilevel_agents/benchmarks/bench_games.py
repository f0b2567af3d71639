"""Markov games: speed benchmarks and the learning runs behind ``docs/results/games.md``.

Usage (``python -m bilevel_agents.benchmarks.bench_games COMMAND``)::

    bench_games [speed] [--quick]     # follower solves, one BC-HG iteration (the benchmark)
    bench_games toy --seeds 10        # toy game R = 2 and 1 (CSV to --out)
    bench_games lqr --seeds 20        # LQR game
    bench_games lqr-estimator         # LQR gradient-estimate quality at fixed K
    bench_games plot CURVES.jsonl     # LQR learning curves (from lqr --curves)
    bench_games report CSV...         # Markdown tables of the learning runs

Speed numbers are ratios measured in the same run (never asserted in tests): the toy game's
follower solve (policy iteration and vectorised value iteration vs the authors' solver shape, a
Python loop over (s, a, b) per sweep), and one BC-HG outer iteration on the toy and LQR games
against its own rollout and follower re-solve. The learning runs write one CSV row per
(setting, seed) with the final leader policy and exact returns.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_agents import BCHG, BiAC, NaivePGD
from bilevel_agents.benchmarks.harness import (
    Report,
    Stopwatch,
    add_options,
    single_threaded,
    timed,
)
from bilevel_agents.critics import LQRExactLeaderCritic
from bilevel_agents.exact.games import lqr_objective, lqr_objective_and_grad, toy_objective
from bilevel_envs.followers.soft_q_iteration import SoftQIterationFollower
from bilevel_envs.games import lqr_game_v0, toy_game_v0
from bilevel_envs.games.policies import MLPSoftmax
from bilevel_envs.games.toy_logic import toy_model
from bilevel_envs.wrappers import GameBestResponse


# ============================================================================ speed
def _loop_soft_q_iteration(model, f, beta, gamma, tol=1e-6, max_iterations=1000):
    """The authors' solver shape: a Python triple loop over (s, a, b) per sweep (official form)."""
    n_s, n_a, n_b = model.r_follower.shape
    q = np.zeros((n_s, n_a, n_b))
    for _ in range(max_iterations):
        new = np.empty_like(q)
        for s in range(n_s):
            for a in range(n_a):
                for b in range(n_b):
                    s2 = int(model.next_state[s, a, b])
                    qbar = [sum(f[s2, a2] * q[s2, a2, b2] for a2 in range(n_a))
                            for b2 in range(n_b)]
                    m = max(qbar)
                    lse = m + beta * np.log(sum(np.exp((x - m) / beta) for x in qbar))
                    new[s, a, b] = model.r_follower[s, a, b] + gamma * lse
        delta = np.max(np.abs(new - q))
        q = new
        if delta < tol:
            break
    return q


def speed(args: argparse.Namespace) -> int:
    """Follower solves of the toy game and one BC-HG outer iteration on both games."""
    repeat = 2 if args.quick else 5
    report = Report("bench_games", args)
    with single_threaded(args.blas_threads):
        m = toy_model(2)
        f = np.full((3, 2), 0.5)
        report.section("toy follower solve (official form, tol 1e-6)")
        t_pi, _ = timed(lambda: SoftQIterationFollower(0.05, 0.99, bootstrap="official",
                                                       tol=1e-6).solve(m, f), repeat)
        t_vi, _ = timed(lambda: SoftQIterationFollower(0.05, 0.99, bootstrap="official",
                                                       method="value_iteration",
                                                       tol=1e-6).solve(m, f), repeat)
        t_loop, _ = timed(lambda: _loop_soft_q_iteration(m, f, 0.05, 0.99), 1)
        report.time("policy iteration (ours), cold", t_pi)
        report.time("vectorised value iteration, cold", t_vi)
        report.time("Python triple loop over (s, a, b) (authors' shape), cold", t_loop)
        report.ratio("ratio loop / policy iteration", t_loop, t_pi)
        report.ratio("ratio loop / vectorised value iteration", t_loop, t_vi)
        fol = SoftQIterationFollower(0.05, 0.99, bootstrap="official", tol=1e-6)
        f2 = f.copy()
        f2[1] = (0.51, 0.49)
        t_warm, _ = timed(lambda _: fol.solve(m, f2), repeat, setup=lambda: fol.solve(m, f))
        report.time("policy iteration, warm (f changed a little)", t_warm)
        for name, mod, beta, kw in (("toy", toy_game_v0, 0.05, {}),
                                    ("lqr", lqr_game_v0, 0.1, dict(init_scale=1.0, episodes=4))):
            br = GameBestResponse(mod.env(), beta=beta)
            L = BCHG(br, lr=0.01, seed=0, **kw)
            L.update()
            episodes = L.family.options.episodes
            report.section(f"{name} game: one BC-HG outer iteration")
            t_it, _ = timed(L.update, repeat)
            t_roll, _ = timed(lambda: br.rollout(episodes, seed=0), repeat)
            t_solve, _ = timed(lambda: br.set_config(br.config), repeat)
            report.time("BCHG.update()", t_it)
            report.time(f"its rollout of {episodes}x{br.max_episode_steps} steps", t_roll)
            report.ratio("ratio iteration / rollout", t_it, t_roll)
            report.time("follower re-solve (set_config)", t_solve)
    return report.finish()


# ============================================================================ learning runs
TOY_METHODS = {
    "BC-HG": (BCHG, {}),
    "NAIVE-PGD (on)": (NaivePGD, {}),
    "NAIVE-PGD (off)": (NaivePGD, {"buffer_episodes": 7_000}),
    "Bi-AC (off)": (BiAC, {"buffer_episodes": 7_000}),
    "Bi-AC (on)": (BiAC, {}),
}


def _append(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _done(path: Path) -> set:
    if not path.exists():
        return set()
    with open(path) as fh:
        return {(r["setting"], r["method"], r["seed"]) for r in csv.DictReader(fh)}


def toy(seeds: int, iterations: int, out: Path, methods: list[str], forms: list[str],
        rewards: list[int], lr: float, policy: str = "tabular") -> None:
    done = _done(out)
    for R in rewards:
        for form in forms:
            setting = f"toy R={R} {form}" + (" mlp" if policy == "mlp" else "")
            for name in methods:
                cls, kw = TOY_METHODS[name]
                for seed in range(seeds):
                    if (setting, name, str(seed)) in done:
                        continue
                    param = MLPSoftmax(3, 2) if policy == "mlp" else None
                    br = GameBestResponse(toy_game_v0.env(reward=R), beta=0.05, bootstrap=form,
                                      leader_parameterization=param)
                    L = cls(br, lr=lr, seed=seed, max_grad_norm=None, **kw)
                    clock = Stopwatch()
                    tail = []

                    def ev():
                        if L.iteration >= 0.6 * iterations:
                            f = br.leader_policy
                            tail.append((f[1, 0], toy_objective(
                                f, model=br.problem.model, bootstrap=form, horizon=150,
                                gamma=1.0), toy_objective(f, model=br.problem.model,
                                                          bootstrap=form, horizon=150,
                                                          gamma=0.99)))
                        return {}

                    L.learn(iterations, evaluate=ev, eval_every=10, progress=False)
                    tail_arr = np.array(tail)
                    f = br.leader_policy
                    row = {"setting": setting, "method": name, "seed": seed,
                           "final_p": f[1, 0],
                           "final_return": toy_objective(f, bootstrap=form, reward=R,
                                                         horizon=150, gamma=1.0),
                           "final_disc_return": toy_objective(f, bootstrap=form, reward=R,
                                                              horizon=150, gamma=0.99),
                           "tail_p": tail_arr[:, 0].mean(), "tail_return": tail_arr[:, 1].mean(),
                           "tail_disc_return": tail_arr[:, 2].mean(),
                           "seconds": clock.seconds, "iterations": iterations,
                           "lr": lr}
                    _append(out, row)
                    print(setting, name, seed, {k: round(float(v), 3) for k, v in row.items()
                                                if k not in ("setting", "method")}, flush=True)


LQR_METHODS = {
    "BC-HG": (BCHG, {}),
    "BC-HG (exact critic)": (BCHG, {"oracle": True, "benefit_samples": 2}),
    "NAIVE-PGD (exact critic)": (NaivePGD, {"oracle": True}),
    "BC-HG (plain)": (BCHG, {"control_variates": False}),
    "BC-HG (critic exploration 0.3)": (BCHG, {"critic_exploration": 0.3}),
    "NAIVE-PGD (critic exploration 0.3)": (NaivePGD, {"critic_exploration": 0.3}),
    "NAIVE-PGD (on)": (NaivePGD, {}),
    "NAIVE-PGD (off)": (NaivePGD, {"buffer_episodes": 7_000}),
}


def lqr_leader(name: str, **kwargs) -> tuple[GameBestResponse, Any]:
    """A fresh LQR game (β = 0.1) and the leader of ``LQR_METHODS[name]`` on it, 4 episodes
    per iteration (``"oracle"``: the exact leader critic)."""
    cls, kw = LQR_METHODS[name]
    kw = dict(kw)
    if kw.pop("oracle", False):
        kw["critic"] = LQRExactLeaderCritic(tol=1e-3)
    br = GameBestResponse(lqr_game_v0.env(), beta=0.1)
    return br, cls(br, episodes=4, **kw, **kwargs)


def exact_ascent(K0, iterations, lr=0.1, max_grad_norm=1.0, follower_fixed=False, curve=None):
    """Adam on the exact hypergradient of the 100-step return (the reference in known_optima);
    ``follower_fixed=True``: on the exact partial derivative (what NAIVE-PGD estimates)."""
    K = np.array(K0, dtype=np.float64).reshape(1, 2)
    m = v = np.zeros_like(K)
    for t in range(1, iterations + 1):
        try:
            J, g = lqr_objective_and_grad(K, follower_fixed=follower_fixed)
        except ValueError:
            break
        if curve is not None and (t - 1) % 10 == 0:
            curve.append((t - 1, J))
        n = np.linalg.norm(g)
        g = g * (max_grad_norm / n) if n > max_grad_norm else g
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g ** 2
        step = (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        try:
            lqr_objective(K + lr * step)
            K = K + lr * step
        except ValueError:
            break
    return K


def lqr(seeds: int, iterations: int, out: Path, methods: list[str], seed_start: int = 0,
        k0: tuple[float, float] | None = None, lr: float = 0.1,
        curves: Path | None = None) -> None:
    done = _done(out)
    setting = "lqr" if k0 is None else f"lqr K0={tuple(k0)}"
    for seed in range(seed_start, seed_start + seeds):
        for name in methods:
            if (setting, name, str(seed)) in done:
                continue
            clock = Stopwatch()
            curve: list = []
            if name.startswith("exact-"):
                K0 = (np.random.default_rng(seed).normal(size=(1, 2)) if k0 is None
                      else np.array([k0], dtype=np.float64))
                K = exact_ascent(K0, iterations, follower_fixed=name.startswith("exact-partial"),
                                 curve=curve)
                tail = [lqr_objective(K)]
            else:
                br, L = lqr_leader(name, lr=lr, seed=seed, init_scale=1.0,
                                   explore_iterations=10,
                                   theta0=None if k0 is None else np.array(k0))
                K0 = br.leader_gain.copy()
                tail = []

                def ev():
                    J = lqr_objective(br.leader_gain)
                    curve.append((L.iteration, J))
                    if L.iteration >= 0.6 * iterations:
                        tail.append(J)
                    return {}

                L.learn(iterations, evaluate=ev, eval_every=10, progress=False)
                K = br.leader_gain
            row = {"setting": setting if lr == 0.1 else f"{setting} lr={lr}", "method": name,
                   "seed": seed, "K0_1": K0[0, 0], "K0_2": K0[0, 1], "J0": lqr_objective(K0),
                   "K_1": K[0, 0], "K_2": K[0, 1], "final_return": lqr_objective(K),
                   "tail_return": float(np.mean(tail)), "seconds": clock.seconds,
                   "iterations": iterations}
            _append(out, row)
            if curves is not None:
                with open(curves, "a") as fh:
                    fh.write(json.dumps({"setting": row["setting"], "method": name, "seed": seed,
                                         "curve": curve}) + "\n")
            print(name, seed, {k: round(float(v), 4) for k, v in row.items()
                               if k not in ("setting", "method")}, flush=True)


def lqr_estimator(points: list[tuple[float, float]], warmup: int, batches: int) -> None:
    """Gradient-estimate quality on the LQR game at fixed K: critic trained ``warmup`` batches
    at K (no actor step), then ``batches`` estimates; cosine of their mean with the exact
    hypergradient of the discounted objective (γ_L = 0.99) and of the 100-step return."""
    from bilevel_agents.exact import hypergradient

    for K in points:
        for name in ("BC-HG", "BC-HG (plain)", "NAIVE-PGD (on)"):
            br, L = lqr_leader(name, lr=0.1, seed=0, theta0=np.array(K))
            exact = hypergradient(br)
            exact100 = lqr_objective_and_grad(np.array([K]))[1].ravel()
            for _ in range(warmup):
                L.critic.update(L.family.critic_data(L, L.family.collect(L)), br)
            est = np.array([L.estimate_gradient() for _ in range(batches)])
            m = est.mean(0)
            se = est.std(0, ddof=1) / np.sqrt(batches)

            def cos(u, v):
                return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-300))

            print(f"K={K} {name}: exact ∇J(γ=.99) {exact.round(5)}, ∇J(100 steps) "
                  f"{exact100.round(5)}; mean estimate {m.round(5)} ± {se.round(5)}; cosine "
                  f"{cos(m, exact):.3f} / {cos(m, exact100):.3f}; per-batch cosine "
                  f"{np.mean([cos(e, exact) for e in est]):.3f}", flush=True)


def plot_curves(path: Path, out: Path) -> None:
    """Mean ± SD learning curves (exact 100-step return) per (setting, method) from JSON lines."""
    import matplotlib.pyplot as plt

    fig = curves_figure(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(out)


def curves_figure(path: Path) -> Any:
    """The figure of :func:`plot_curves`: plain tick labels on both axes (no offset, no
    scientific notation), so that the values read as printed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    runs: dict[str, list] = {}
    for line in open(path):
        r = json.loads(line)
        runs.setdefault(f"{r['method']} ({r['setting']})", []).append(np.array(r["curve"]))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, curves in sorted(runs.items()):
        n = min(len(c) for c in curves)
        x = curves[0][:n, 0]
        y = np.stack([c[:n, 1] for c in curves])
        m, sd = y.mean(0), y.std(0)
        ax.plot(x, m, label=f"{label}, {len(curves)} seeds")
        ax.fill_between(x, np.maximum(m - sd, 1e-3), m + sd, alpha=0.2)
    ax.axhline(18.43, color="k", ls=":", lw=1, label="best known K (18.43)")
    ax.set_yscale("log")
    ax.set_ylim(5e-3, 40)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.01 … 10, no 10^k
    ax.set_xlabel("outer iteration")
    ax.set_ylabel("exact 100-step leader return (log scale)")
    ax.set_title("LQR Markov game (mean ± SD over seeds)")
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return fig


def report(paths: list[Path]) -> None:
    """Markdown tables (mean ± SD over seeds, as the paper's MG figures) from result CSVs."""
    rows = []
    for path in paths:
        if path.exists():
            with open(path) as fh:
                rows += list(csv.DictReader(fh))
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        key = r["method"] if r["setting"].startswith("toy") else (
            f"{r['method']}, {int(float(r['iterations']))} it.")
        groups.setdefault((r["setting"], key), []).append(r)

    def ms(vals):
        v = np.array(vals, dtype=float)
        return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"

    toy_keys = ["final_p", "tail_p", "tail_return", "tail_disc_return", "final_return"]
    print("| setting | method | seeds | " + " | ".join(toy_keys) + " | s/run |")
    print("|---|---|---|" + "---|" * (len(toy_keys) + 1))
    for (setting, method), rs in sorted(groups.items()):
        if not setting.startswith("toy"):
            continue
        print(f"| {setting} | {method} | {len(rs)} | "
              + " | ".join(ms([r[k] for r in rs]) for k in toy_keys)
              + f" | {np.mean([float(r['seconds']) for r in rs]):.1f} |")
    lqr_keys = ["J0", "final_return", "tail_return"]
    print()
    print("| method | seeds | " + " | ".join(lqr_keys) + " | median final | best final | "
          "seeds > 1 | s/run |")
    print("|---|---|" + "---|" * (len(lqr_keys) + 4))
    for (setting, method), rs in sorted(groups.items()):
        if not setting.startswith("lqr"):
            continue
        fin = np.array([float(r["final_return"]) for r in rs])
        print(f"| {setting}: {method} | {len(rs)} | "
              + " | ".join(ms([r[k] for r in rs]) for k in lqr_keys)
              + f" | {np.median(fin):.3f} | {fin.max():.3f} | {(fin > 1).sum()} | "
              f"{np.mean([float(r['seconds']) for r in rs]):.0f} |")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("speed", "toy", "lqr", "lqr-estimator", "plot", "report")
    if not argv or (argv[0] not in commands and argv[0] not in ("-h", "--help")):
        argv.insert(0, "speed")  # `bilevel bench [--quick]` runs the speed benchmark
    description, _, epilog = __doc__.partition("\n\n")
    ap = argparse.ArgumentParser(description=description, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_options(sub.add_parser("speed", help="follower solves, one BC-HG iteration (the "
                               "benchmark)"), quick_help="2 repeats instead of 5")
    t = sub.add_parser("toy")
    t.add_argument("--seeds", type=int, default=10)
    t.add_argument("--iterations", type=int, default=500)
    t.add_argument("--lr", type=float, default=0.003)
    t.add_argument("--methods", nargs="+", default=["BC-HG", "NAIVE-PGD (on)", "Bi-AC (off)"])
    t.add_argument("--forms", nargs="+", default=["official", "paper"])
    t.add_argument("--rewards", nargs="+", type=int, default=[2, 1])
    t.add_argument("--policy", choices=["tabular", "mlp"], default="tabular")
    t.add_argument("--out", type=Path, default=Path("docs/results/games_toy.csv"))
    q = sub.add_parser("lqr")
    q.add_argument("--seeds", type=int, default=20)
    q.add_argument("--iterations", type=int, default=500)
    q.add_argument("--methods", nargs="+", default=["BC-HG", "NAIVE-PGD (on)",
                                                    "exact-hypergradient Adam"])
    q.add_argument("--seed-start", type=int, default=0)
    q.add_argument("--k0", type=float, nargs=2, default=None, help="fixed start K (warm start)")
    q.add_argument("--lr", type=float, default=0.1)
    q.add_argument("--curves", type=Path, default=None, help="append learning curves (JSON lines)")
    q.add_argument("--out", type=Path, default=Path("docs/results/games_lqr.csv"))
    e = sub.add_parser("lqr-estimator")
    e.add_argument("--warmup", type=int, default=100)
    e.add_argument("--batches", type=int, default=50)
    pc = sub.add_parser("plot")
    pc.add_argument("curves", type=Path)
    pc.add_argument("--out", type=Path, default=Path("docs/results/games_lqr_curves.png"))
    rp = sub.add_parser("report")
    rp.add_argument("csv", nargs="+", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "speed":
        return speed(args)
    if args.cmd == "report":
        report(args.csv)
        return 0
    if args.cmd == "plot":
        plot_curves(args.curves, args.out)
        return 0
    with single_threaded():
        if args.cmd == "lqr-estimator":
            lqr_estimator([(0.0, 0.0), (-9.0, -9.5), (-9.683, -10.25)], args.warmup,
                          args.batches)
        elif args.cmd == "toy":
            toy(args.seeds, args.iterations, args.out, args.methods, args.forms, args.rewards,
                args.lr, args.policy)
        elif args.cmd == "lqr":
            lqr(args.seeds, args.iterations, args.out, args.methods, args.seed_start, args.k0,
                args.lr, args.curves)
    return 0


if __name__ == "__main__":
    sys.exit(main())
