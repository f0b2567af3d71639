"""Make every picture the documentation shows, from short real runs (about half a minute).

    python docs/make_gallery.py            # writes docs/gallery/*.png

``scripts/docs.sh`` runs it before ``mkdocs build``, so the figures always show the current
code. Each picture comes from the public API, seeded:

* ``four_rooms.png``, ``contextual_four_rooms.png``: the maps rendered by the env
  (``render_rgb``) with the exact follower's greedy moves at θ = 0;
* ``building.png``: zone temperatures of one episode under the follower's MaxEnt-LQR response;
* ``tax_design.png``: the household's exact soft best response (hours, consumption) by assets;
* ``toy_game.png``: the follower's soft best response of the toy game to a uniform leader;
* ``lqr_game.png``: state trajectories and leader rewards of the LQR game at the start;
* ``four_rooms_curves.png``, ``four_rooms_incentive.png``: a short BC-HG vs NAIVE-PGD sweep on
  Four-Rooms (2 seeds × 400 iterations), plotted by ``bilevel plot``'s own function.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

OUT = Path(__file__).resolve().parent / "gallery"
DPI = 110


def _save(fig: plt.Figure, name: str) -> Path:
    path = OUT / name
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


def four_rooms() -> list[Path]:
    """The Four-Rooms map and the contextual variant, with the follower's greedy moves."""
    import gymnasium as gym

    from bilevel_envs.wrappers import BestResponse

    br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)
    br.set_config(np.zeros(br.config_space.shape))
    fig, ax = plt.subplots(figsize=(4.2, 4.4))
    ax.imshow(br.problem.render_rgb(br.problem.incentive, policy=br.policy))
    ax.set_title("Four-Rooms, θ = 0: start (blue), target (yellow),\ngoal (green), "
                 "incentive (red), follower's moves", fontsize=8)
    ax.set_axis_off()
    paths = [_save(fig, "four_rooms.png")]

    ctx = BestResponse(gym.make("BiLevel/ContextualFourRooms-v0"), beta=0.005)
    ctx.set_config(np.zeros(ctx.config_space.shape))
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 4.0))
    for k, ax in enumerate(axes):
        ax.imshow(ctx.problem.render_rgb(ctx.problem.incentive, policy=ctx.policy, context=k))
        goal = tuple(int(x) for x in ctx.problem.cells[ctx.problem.goal_cells[k]])
        ax.set_title(f"context {k}: goal {goal}", fontsize=9)
        ax.set_axis_off()
    fig.suptitle("Contextual Four-Rooms (HPGD's task): one θ, two goals", fontsize=10)
    paths.append(_save(fig, "contextual_four_rooms.png"))
    return paths


def building() -> list[Path]:
    """One episode of building thermal control under the follower's best response at θ = 0."""
    import gymnasium as gym

    from bilevel_envs.wrappers import BestResponse

    br = BestResponse(gym.make("BiLevel/BuildingThermal-v0"), beta=0.1)
    br.set_config(np.zeros(br.config_space.shape))
    batch = br.rollout(100, n_envs=1, seed=0)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.4, 3.2))
    for i in range(batch.obs.shape[1]):
        ax.plot(batch.time, batch.obs[:, i], label=f"zone {i + 1}")
    ax.set_xlabel("step")
    ax.set_ylabel("temperature deviation")
    ax.legend(fontsize=7)
    ax.set_title("zones under the follower's MaxEnt-LQR response", fontsize=9)
    for j in range(batch.actions.shape[1]):
        bx.plot(batch.time, batch.actions[:, j], label=f"HVAC {j + 1}")
    bx.set_xlabel("step")
    bx.set_ylabel("actuation b")
    bx.legend(fontsize=7)
    bx.set_title("the follower's actions (θ = 0)", fontsize=9)
    return [_save(fig, "building.png")]


def tax_design() -> list[Path]:
    """The household's exact soft best response at the initial tax rates, by assets."""
    import gymnasium as gym

    from bilevel_envs.envs.tax_design import ACTION_NVEC, decode_actions
    from bilevel_envs.wrappers import BestResponse

    br = BestResponse(gym.make("BiLevel/TaxDesignTabular-v0"), beta=0.2)
    env = br.problem
    joint = np.stack(np.unravel_index(np.arange(env.n_actions), ACTION_NVEC), axis=-1)
    hours, consumption = decode_actions(joint)
    policy = br.policy
    n_grid, grid = env.n_grid, env.asset_grid
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.4, 3.2))
    for k in range(len(env.preferences)):
        rows = policy[k * n_grid:(k + 1) * n_grid]
        alpha = np.round(env.preferences[k], 2).tolist()
        ax.plot(grid, rows @ hours, label=f"context {k}: α = {alpha}")
        for i in range(consumption.shape[1]):
            bx.plot(grid, rows @ consumption[:, i], ls=("-", "--")[k], color=f"C{i}",
                    label=f"good {i + 1}, context {k}")
    ax.set_xlabel("assets a")
    ax.set_ylabel("expected hours worked")
    ax.legend(fontsize=7)
    ax.set_title("household's best response, VAT = τ = 0.3", fontsize=9)
    bx.set_xlabel("assets a")
    bx.set_ylabel("expected consumption")
    bx.legend(fontsize=6, ncol=2)
    bx.set_title("consumption of each good", fontsize=9)
    return [_save(fig, "tax_design.png")]


def toy_game() -> list[Path]:
    """The follower's soft best response ``g(b|s, a)`` to a uniform leader in the toy game."""
    from bilevel_envs.games import toy_game_v0
    from bilevel_envs.games.toy_logic import FOLLOWER_ACTIONS, STATES
    from bilevel_envs.wrappers import GameBestResponse

    br = GameBestResponse(toy_game_v0.env(reward=2), beta=0.05)
    br.set_config(np.zeros(br.config_space.shape))  # uniform leader policy
    g = np.asarray(br.policy)  # (S, A, B)
    rows = [(s, a) for s in range(g.shape[0]) for a in range(g.shape[1])]
    table = np.stack([g[s, a] for s, a in rows])
    fig, ax = plt.subplots(figsize=(4.4, 3.6))
    im = ax.imshow(table, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(FOLLOWER_ACTIONS)), [f"b = {b}" for b in FOLLOWER_ACTIONS])
    ax.set_yticks(range(len(rows)), [f"s = {STATES[s]}, a = {a}" for s, a in rows])
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            ax.text(j, i, f"{table[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if table[i, j] > 0.6 else "black")
    ax.set_title("toy game (R = 2): follower's soft best response\nto a uniform leader, "
                 "β = 0.05", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return [_save(fig, "toy_game.png")]


def lqr_game() -> list[Path]:
    """LQR game trajectories under the leader's initial policy and the follower's response."""
    from bilevel_envs.games import lqr_game_v0
    from bilevel_envs.wrappers import GameBestResponse

    br = GameBestResponse(lqr_game_v0.env(), beta=0.1)
    batch = br.rollout(8, seed=0)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.4, 3.2))
    for e in range(batch.obs.shape[0]):
        ax.plot(batch.obs[e, :, 0], batch.obs[e, :, 1], lw=0.8, alpha=0.7, color="C0",
                label="episodes" if e == 0 else None)
        bx.plot(batch.r_leader[e], lw=0.8, alpha=0.7, color="C1")
    ax.plot([1.0], [0.0], "ks", label="start s0")
    ax.plot([-0.8], [0.0], "r*", ms=12, label="leader's target s*")
    ax.set_xlabel("s[0]")
    ax.set_ylabel("s[1]")
    ax.legend(fontsize=7)
    ax.set_title("LQR game: 8 episodes, the leader's initial policy", fontsize=9)
    bx.set_xlabel("round")
    bx.set_ylabel("leader reward r_L")
    bx.set_title("the leader is paid near s* only", fontsize=9)
    return [_save(fig, "lqr_game.png")]


def four_rooms_curves() -> list[Path]:
    """A short BC-HG vs NAIVE-PGD sweep on Four-Rooms, plotted by the library's plot code."""
    from bilevel_agents.experiments.references import FOUR_ROOMS
    from bilevel_agents.experiments.results import plot_results
    from bilevel_agents.experiments.sweep import RunSpec, run_sweep

    beta = 0.005
    _, best = FOUR_ROOMS[(beta, 1 / 3)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        specs = [RunSpec(env="BiLevel/FourRooms-v0", leader=leader, beta=beta, seed=seed,
                         iterations=400, leader_kwargs=kwargs, out=str(root), tail=100,
                         checkpoint_every=400)
                 for leader, kwargs in (("bchg", {"lr": 0.5, "sarsa_alpha": 0.5}),
                                        ("naive_pgd", {"lr": 0.5}))
                 for seed in (0, 1)]
        run_sweep(specs, workers=1, progress=False)
        made = plot_results(root, Path(tmp) / "plots", tail=100, best_known=best,
                            title=f"Four-Rooms, β = {beta}: 2 seeds × 400 iterations")
        paths = []
        for src, name in zip(made, ("four_rooms_curves.png", "four_rooms_incentive.png")):
            paths.append(Path(shutil.copy(src, OUT / name)))
    return paths


PICTURES = (four_rooms, building, tax_design, toy_game, lqr_game, four_rooms_curves)


def main(argv: list[str] | None = None) -> int:
    """Make every picture (or those whose function names are given); print their times."""
    names = set(argv if argv is not None else sys.argv[1:])
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        for make in PICTURES:
            if names and make.__name__ not in names:
                continue
            t0 = time.perf_counter()
            paths = make()
            shown = ", ".join(p.name for p in paths)
            print(f"{make.__name__:>18}: {time.perf_counter() - t0:5.1f} s  {shown}")
    print(f"gallery: {time.perf_counter() - start:.1f} s -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
