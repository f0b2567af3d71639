"""Follower specs: one CLI string → a follower for a given problem.

Forms (``key=value`` lists are separated by ``,`` or ``:``)::

    exact[:key=value,...]                  the problem's exact solver (problem.make_follower)
    kstep:K[:carry|reset][:key=value,...]  k-step sub-optimal follower (default mode: carry)
    soft-q-learning[:key=value,...]        tabular soft Q-learning (SoftQLearning)
    soft-dqn[:key=value,...]               HPGD's factorised soft DQN (SoftDQN)
    sb3:ALGO[:key=value,...]               a Stable-Baselines3 model (SB3Follower)

Examples: ``exact``, ``exact:bootstrap=official`` (toy game), ``kstep:5``, ``kstep:10:reset``,
``kstep:5:reset:form=official``, ``soft-q-learning:steps=5000,lr_min=0.01``,
``soft-q-learning:publish=false`` (black box), ``soft-dqn:steps=1000,lr=0.001``,
``sb3:DQN:learning_starts=0``,
``sb3:PPO:n_steps=128,batch_size=64,steps=128``, ``sb3:SAC:ent_coef=0.1``.

Values are parsed as ``true``/``false`` (bool), ``none`` (None), integers, floats, else strings.
Which kinds apply depends on the problem (:data:`ALLOWED_KINDS`):

| problem | exact | kstep | soft-q-learning | soft-dqn | sb3 |
|---|---|---|---|---|---|
| tabular configurable MDP (Four-Rooms) | ✓ | ✓ (:class:`KStepSoftFollower`) | ✓ | ✓ | PPO, A2C, DQN |
| linear-Gaussian MDP (building) | ✓ | ✓ (:class:`KStepMaxEntLQRFollower`) | – | – | SAC, PPO, … |
| tabular game (toy) | ✓ | ✓ (:class:`KStepSoftQIterationFollower`) | ✓ (:class:`GameSoftQLearning`) | – | – |
| LQR game | ✓ | – | – | – | – |
| any other configurable MDP (e.g. TaxDesign-v0) | if it has one | – | – | discrete actions | by action space |

Options per kind (besides the positional parts):

* ``kstep`` (tabular): ``backups`` (5), ``form`` (paper|official), ``init_std`` (1.0);
  (toy game): ``bootstrap`` (paper|official), ``init_std``, ``tol``; (LQR): none.
* ``soft-q-learning``: ``steps`` (= ``steps_per_leader_update``; rounds of the game for a
  game), ``lr``, ``lr_power``, ``lr_decay``, ``lr_min``, ``epsilon``, ``init_value``,
  ``init_std``, ``warmup``, ``publish``, ``max_episode_steps``.
* ``soft-dqn``: ``steps`` (= ``steps_per_leader_update``), ``warmup``, ``publish`` and every
  keyword of :class:`~bilevel_envs.followers.soft_dqn.SoftDQN` (``lr``, ``batch_size``,
  ``learning_starts``, ``target_update``, ``epsilon_start``, ``epsilon_end``, ``epsilon_steps``,
  ``n_envs``, ``width``, ``layers``, ...).
* ``sb3``: ``steps``, ``warmup``, ``publish``, ``policy`` and any constructor argument of the SB3
  algorithm.

Every malformed spec raises a one-line ``ValueError`` naming the bad part and the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALLOWED_KINDS", "FOLLOWER_KINDS", "FollowerSpec", "make_follower",
           "parse_follower_spec", "problem_family", "split_follower_list"]

#: the spec kinds
FOLLOWER_KINDS = ("exact", "kstep", "soft-q-learning", "soft-dqn", "sb3")
#: the kinds that apply to each problem family (:func:`problem_family`)
ALLOWED_KINDS = {"tabular": ("exact", "kstep", "soft-q-learning", "soft-dqn", "sb3"),
                 "lqr": ("exact", "kstep", "sb3"),
                 "tabular-game": ("exact", "kstep", "soft-q-learning"),
                 "lqr-game": ("exact",),
                 "other": ("exact", "soft-dqn", "sb3")}
#: the grammar, quoted in error messages
FORMS_HELP = ("exact[:key=value,...], kstep:K[:carry|reset][:key=value,...], "
              "soft-q-learning[:key=value,...], soft-dqn[:key=value,...], "
              "sb3:ALGO[:key=value,...]")

_SQL_KEYS = {"steps": "steps_per_leader_update", "steps_per_leader_update":
             "steps_per_leader_update", "lr": "lr", "lr_power": "lr_power",
             "lr_decay": "lr_decay", "lr_min": "lr_min", "epsilon": "epsilon",
             "init_value": "init_value", "init_std": "init_std", "warmup": "warmup_steps",
             "warmup_steps": "warmup_steps", "publish": "publish",
             "max_episode_steps": "max_episode_steps"}
_KSTEP_KEYS = {"tabular": ("backups", "form", "init_std"),
               "tabular-game": ("bootstrap", "init_std", "tol"), "lqr": ()}
_SB3_FOLLOWER_KEYS = {"steps": "steps_per_leader_update",
                      "steps_per_leader_update": "steps_per_leader_update",
                      "warmup": "warmup_steps", "warmup_steps": "warmup_steps",
                      "publish": "publish_policy", "publish_policy": "publish_policy",
                      "policy": "policy", "max_episode_steps": "max_episode_steps"}


@dataclass(frozen=True)
class FollowerSpec:
    """A parsed follower spec (:func:`parse_follower_spec`).

    Attributes:
        kind: one of :data:`FOLLOWER_KINDS`.
        k: ``kstep``: the number of iterations.
        mode: ``kstep``: ``"carry"`` or ``"reset"``.
        algo: ``sb3``: the algorithm name (e.g. ``"DQN"``).
        options: the ``key=value`` options, values parsed.
        text: the original string.
    """

    kind: str
    k: int | None = None
    mode: str | None = None
    algo: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def __str__(self) -> str:
        """The canonical spec string (parses back to the same spec)."""
        head = {"exact": "exact", "soft-q-learning": "soft-q-learning", "soft-dqn": "soft-dqn",
                "kstep": f"kstep:{self.k}:{self.mode}", "sb3": f"sb3:{self.algo}"}[self.kind]
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{head}:{opts}" if opts else head


def split_follower_list(text: str) -> list[str]:
    """Split a comma list of follower specs whose options may hold commas too.

    A comma starts a new spec only where a spec kind follows it:
    ``"exact,soft-q-learning:steps=450,epsilon=0.2"`` → ``["exact",
    "soft-q-learning:steps=450,epsilon=0.2"]``.
    """
    import re

    kinds = "|".join(re.escape(k) for k in FOLLOWER_KINDS)
    return [part for part in re.split(rf",(?=\s*(?:{kinds})(?::|,|$))", text) if part.strip()]


def _parse_value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def _bad(spec: str, msg: str) -> ValueError:
    return ValueError(f"follower spec {spec!r}: {msg}")


def _parse_options(spec: str, items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in (x for part in items for x in part.split(",")):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _bad(spec, f"option {item!r} is not key=value")
        if key in options:
            raise _bad(spec, f"option {key!r} given twice")
        options[key] = _parse_value(value)
    return options


def parse_follower_spec(spec: str | FollowerSpec) -> FollowerSpec:
    """Parse a follower spec string (module docstring for the grammar).

    Raises:
        ValueError: one line naming the bad part and the allowed values.
    """
    if isinstance(spec, FollowerSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"follower spec must be a non-empty string, got {spec!r}; "
                         f"forms: {FORMS_HELP}")
    text = spec.strip()
    parts = text.split(":")
    kind = parts[0].strip().lower()
    if kind not in FOLLOWER_KINDS:
        raise _bad(text, f"unknown kind {parts[0]!r}; allowed: {list(FOLLOWER_KINDS)} "
                         f"(forms: {FORMS_HELP})")
    if kind in ("exact", "soft-q-learning", "soft-dqn"):
        return FollowerSpec(kind, options=_parse_options(text, parts[1:]), text=text)
    if kind == "kstep":
        if len(parts) < 2 or not parts[1].strip():
            raise _bad(text, "kstep needs K, the number of iterations (kstep:K[:carry|reset])")
        try:
            k = int(parts[1])
        except ValueError:
            k = 0
        if k < 1:
            raise _bad(text, f"K must be an integer >= 1, got {parts[1]!r} (authors: 1, 2, 5, "
                             "10, 20, 50)")
        rest, mode = parts[2:], "carry"
        if rest and "=" not in rest[0]:
            mode = rest[0].strip().lower()
            if mode not in ("carry", "reset"):
                raise _bad(text, f"kstep mode must be 'carry' or 'reset', got {rest[0]!r}")
            rest = rest[1:]
        return FollowerSpec(kind, k=k, mode=mode, options=_parse_options(text, rest), text=text)
    # sb3
    from bilevel_envs.followers.sb3 import SB3_ALGORITHMS

    if len(parts) < 2 or not parts[1].strip():
        raise _bad(text, f"sb3 needs an algorithm (sb3:ALGO); allowed: {sorted(SB3_ALGORITHMS)}")
    algo = parts[1].strip()
    canonical = {a.lower(): a for a in SB3_ALGORITHMS}.get(algo.lower())
    if canonical is None:
        raise _bad(text, f"unknown SB3 algorithm {algo!r}; allowed: {sorted(SB3_ALGORITHMS)}")
    return FollowerSpec(kind, algo=canonical, options=_parse_options(text, parts[2:]), text=text)


def _raw_problem(problem: Any) -> Any:
    """The raw problem of a wrapper (``.problem``), a Gymnasium/PettingZoo env or itself."""
    inner = getattr(problem, "problem", None)
    raw = inner if inner is not None else getattr(problem, "unwrapped", problem)
    return getattr(raw, "unwrapped", raw)


def problem_family(problem: Any) -> str:
    """The family of a problem (a key of :data:`ALLOWED_KINDS`).

    ``"tabular"``, ``"lqr"``, ``"tabular-game"``, ``"lqr-game"`` or ``"other"``. Accepts
    wrapped or raw problems: a Gymnasium configurable MDP, a PettingZoo game (AEC or parallel),
    or a ``BestResponse`` / ``GameBestResponse`` (its problem).
    """
    from bilevel_envs.games.base import LeaderFollowerGame

    raw = _raw_problem(problem)
    if isinstance(raw, LeaderFollowerGame):
        return "tabular-game" if hasattr(raw, "model") else "lqr-game"
    if hasattr(raw, "tabular_model"):
        return "tabular"
    if hasattr(raw, "lqr_model"):
        return "lqr"
    if hasattr(raw, "config_space") and hasattr(raw, "transition"):
        return "other"
    raise ValueError(f"no follower specs for {type(raw).__name__}: expected a bilevel_envs "
                     "configurable MDP or leader-follower game")


def _unknown(text: str, kind: str, unknown: list[str], allowed: list[str]) -> ValueError:
    return _bad(text, f"unknown {kind} option(s) {unknown}; allowed: {allowed}")


def make_follower(spec: str | FollowerSpec, problem: Any, beta: float, *,
                  seed: int | None = None) -> Any:
    """A follower for ``problem`` from a spec string (module docstring).

    Args:
        spec: e.g. ``"exact"``, ``"kstep:5:reset"``, ``"soft-q-learning:steps=2000"``,
            ``"sb3:DQN:learning_starts=0"``.
        problem: the problem the follower will answer (``gym.make(...)`` env, its unwrapped
            problem, a PettingZoo game); SB3 followers train on a :class:`FollowerEnv` sharing
            this very instance, so pass the one the wrapper will hold.
        beta: the follower's temperature β.
        seed: seeds the follower's own randomness (k-step random starts, soft Q-learning, SB3).

    Returns:
        A :class:`~bilevel_envs.followers.Follower`, to pass as
        ``BestResponse(env, beta, follower=...)`` / ``GameBestResponse(game, beta, follower=...)``.

    Raises:
        ValueError: a malformed spec, a kind that does not apply to this problem, or a bad
            option (one line, naming the part and the allowed values).
    """
    parsed = parse_follower_spec(spec)
    text, opts = parsed.text or str(parsed), dict(parsed.options)
    family = problem_family(problem)
    raw = _raw_problem(problem)
    if parsed.kind not in ALLOWED_KINDS[family]:
        raise _bad(text, f"{parsed.kind} does not apply to {type(raw).__name__} ({family}); "
                         f"allowed here: {list(ALLOWED_KINDS[family])}")
    try:
        return _build(parsed, family, raw, beta, seed, text, opts)
    except TypeError as err:  # e.g. an unknown keyword of problem.make_follower
        raise _bad(text, str(err)) from None
    except ValueError as err:
        msg = str(err)
        if msg.startswith("follower spec "):
            raise
        raise _bad(text, msg) from None


def _build(parsed: FollowerSpec, family: str, raw: Any, beta: float, seed: int | None,
           text: str, opts: dict[str, Any]) -> Any:
    from bilevel_envs.followers import kstep as ks

    if parsed.kind == "exact":
        return raw.make_follower(beta, **opts)
    if parsed.kind == "kstep":
        allowed = list(_KSTEP_KEYS[family])
        unknown = sorted(set(opts) - set(allowed))
        if unknown:
            raise _unknown(text, f"kstep ({family})", unknown, allowed)
        if family == "tabular":
            return ks.KStepSoftFollower(beta, parsed.k, parsed.mode, seed=seed, **opts)
        if family == "tabular-game":
            return ks.KStepSoftQIterationFollower(beta, parsed.k, parsed.mode,
                                                  gamma=raw.gamma_follower, seed=seed, **opts)
        return ks.KStepMaxEntLQRFollower(beta, parsed.k, parsed.mode)
    if parsed.kind == "soft-q-learning":
        from bilevel_envs.followers.game_soft_q_learning import GameSoftQLearning
        from bilevel_envs.followers.soft_q_learning import SoftQLearning

        unknown = sorted(set(opts) - set(_SQL_KEYS))
        if unknown:
            raise _unknown(text, "soft-q-learning", unknown, sorted(_SQL_KEYS))
        cls = GameSoftQLearning if family == "tabular-game" else SoftQLearning
        return cls(beta, seed=seed, **{_SQL_KEYS[k]: v for k, v in opts.items()})
    if parsed.kind == "soft-dqn":
        import inspect

        from bilevel_envs.followers.soft_dqn import SoftDQN

        keys = {"steps": "steps_per_leader_update", "warmup": "warmup_steps"}
        allowed = sorted(set(keys) | set(inspect.signature(SoftDQN).parameters) - {"beta", "seed"})
        unknown = sorted(set(opts) - set(allowed))
        if unknown:
            raise _unknown(text, "soft-dqn", unknown, allowed)
        return SoftDQN(beta, seed=seed, **{keys.get(k, k): v for k, v in opts.items()})
    # sb3
    from bilevel_envs.followers.sb3 import make_sb3_follower

    follower_opts = {_SB3_FOLLOWER_KEYS[k]: opts.pop(k) for k in list(opts)
                     if k in _SB3_FOLLOWER_KEYS}
    try:
        return make_sb3_follower(raw, parsed.algo, beta, seed=seed, **follower_opts, **opts)
    except ImportError as err:
        raise _bad(text, f"needs stable-baselines3 (pip install bilevel[sb3]): {err}") from None
