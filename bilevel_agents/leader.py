"""The leader: θ, the one step every method takes, the one estimate pipeline, checkpoints.

A leader owns the leader parameter θ (held by the best-response wrapper), a random generator,
a critic and a *family*: the strategy object that knows how the problem at hand is sampled and
differentiated (:mod:`bilevel_agents.families`). A method is a small subclass that says what its
follower-response ("guiding") term is and which critic it learns; everything else is here::

    batch = family.collect()                     # a fresh batch at the current θ
    critic.update(batch)                         # Alg. 1 line 6
    ĝ = family.gradient(partial term + method.guiding_term(batch))
    θ ← project(θ + lr · optimiser(clip(ĝ)))     # the one step; the follower re-solves

Every leader trains through the same loop (:func:`bilevel_agents.trainer.train`). A new
method that is not built from a guiding term overrides :meth:`Leader.estimate_gradient`::

    class MyLeader(Leader):
        name = "mine"

        def estimate_gradient(self):
            ...                      # any estimate of ∇θ J_L at self.theta
            return grad

    MyLeader(br, lr=0.1, seed=0).learn(1000)
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
from scipy.special import softmax

from bilevel_agents.families import Family, family_for
from bilevel_envs.utils import check_choice, check_float, check_int

__all__ = ["Leader", "StepOptions", "clip_by_global_norm", "preset", "simplex_direction"]

OPTIMIZERS = ("sgd", "adam")
GEOMETRIES = ("euclidean", "simplex")


def clip_by_global_norm(grad: np.ndarray, max_norm: float | None) -> np.ndarray:
    """Scale ``grad`` so that its Euclidean norm is at most ``max_norm`` (``None``: no clip)."""
    if max_norm is None:
        return grad
    norm = float(np.linalg.norm(grad))
    return grad * (max_norm / norm) if norm > max_norm else grad


def simplex_direction(grad: np.ndarray, theta: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """The natural-gradient direction of softmax logits: ``∇θ J / max(p, floor)``, ``p =
    softmax(θ)``.

    With ``p = softmax(θ)``, ``∂J/∂θ_i = p_i (∂J/∂p_i − pᵀ∇_p J)``: coordinates of small
    probability get vanishing gradients, however much ``J`` would gain from putting mass
    there. Dividing by ``p_i`` gives ``∂J/∂p_i − pᵀ∇_p J``, the natural gradient under the
    softmax's Fisher metric ``diag(p) − ppᵀ`` (Amari 1998), i.e. mirror ascent on the simplex.
    It is a positive diagonal rescaling of the gradient, hence still an ascent direction;
    ``floor`` bounds the rescaling (at most ``1/floor``).
    """
    p = softmax(np.asarray(theta, dtype=np.float64).ravel())
    return (np.asarray(grad, dtype=np.float64).ravel() / np.maximum(p, floor)).reshape(
        np.shape(grad))


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """How θ moves: the options every leader has.

    Attributes:
        lr: step size α > 0.
        optimizer: ``"sgd"`` (the paper's configurable MDPs) or ``"adam"`` (Adam on the clipped
            gradient, ascent; the authors' Markov games).
        max_grad_norm: clip the gradient to this norm (paper: 1.0); ``None`` = no clip.
        clip_groups: sizes of consecutive parameter groups clipped separately to
            ``max_grad_norm`` (e.g. ``(4, 4)`` for insulation / airflow); ``None`` = global.
        lr_final: if set, the step size decays geometrically from ``lr`` to ``lr_final`` over
            ``lr_decay_iterations`` iterations, then stays there (the paper: constant ``lr``).
        lr_decay_iterations: length of the decay (required with ``lr_final``).
        init_scale: standard deviation of the default initialisation θ ~ N(0, init_scale²).
        geometry: ``"euclidean"`` (the paper: the step follows the gradient in θ) or
            ``"simplex"``, for problems whose θ are the logits of one softmax
            (``config_parameterisation == "softmax"``, e.g. Four-Rooms): the gradient is divided
            coordinate-wise by ``max(softmax(θ), simplex_floor)`` before clipping
            (:func:`simplex_direction`), the natural gradient of the softmax.
        simplex_floor: the smallest probability the ``"simplex"`` direction divides by.
    """

    lr: float = 0.1
    optimizer: str = "sgd"
    max_grad_norm: float | None = 1.0
    clip_groups: tuple[int, ...] | None = None
    lr_final: float | None = None
    lr_decay_iterations: int | None = None
    init_scale: float = 0.01
    geometry: str = "euclidean"
    simplex_floor: float = 1e-3

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "geometry", check_choice("geometry", self.geometry, GEOMETRIES))
        set_(self, "simplex_floor", check_float("simplex_floor", self.simplex_floor, low=0.0,
                                                high=1.0, low_open=True))
        set_(self, "lr", check_float("lr", self.lr, low=0.0, low_open=True))
        set_(self, "optimizer", check_choice("optimizer", self.optimizer, OPTIMIZERS))
        set_(self, "max_grad_norm", check_float("max_grad_norm", self.max_grad_norm, low=0.0,
                                                low_open=True, allow_none=True))
        set_(self, "init_scale", check_float("init_scale", self.init_scale, low=0.0))
        if self.clip_groups is not None:
            groups = tuple(check_int("clip_groups entries", g, 1) for g in self.clip_groups)
            set_(self, "clip_groups", groups)
        if (self.lr_final is None) != (self.lr_decay_iterations is None):
            raise ValueError(f"lr_final and lr_decay_iterations go together, got "
                             f"lr_final={self.lr_final!r}, "
                             f"lr_decay_iterations={self.lr_decay_iterations!r}")
        if self.lr_final is not None:
            set_(self, "lr_final", check_float("lr_final", self.lr_final, low=0.0,
                                               low_open=True))
            set_(self, "lr_decay_iterations",
                 check_int("lr_decay_iterations", self.lr_decay_iterations, 1))


def _option_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


class Leader:
    """Base class of every leader: θ, the one step, the estimate pipeline, checkpoints.

    Args:
        br: the follower's best response (``BestResponse`` over a configurable MDP, or
            ``GameBestResponse`` over a Markov game).
        seed: seeds θ's initialisation, the rollouts and the critic.
        theta0: initial θ; default ``N(0, init_scale²)`` as in the authors' code (or the
            leader policy's own initialisation, e.g. Xavier for an MLP leader).
        critic: a critic object (:mod:`bilevel_agents.critics`), or a kind: ``"td"`` (the
            family's learned TD critic: SARSA, MLP, game TD), ``"mc"`` (Monte Carlo, tabular),
            ``"sarsa"``, ``"stackelberg"`` (Bi-AC's target, tabular games), ``"exact"`` (the
            oracle critic); ``None`` = the method's default.
        critic_kwargs: options of a critic given by kind.
        **options: step options (:class:`StepOptions`: ``lr``, ``optimizer``,
            ``max_grad_norm``, ``clip_groups``, ``lr_final``, ``lr_decay_iterations``,
            ``init_scale``) and the family's sampling options (``batch_size``, ``n_envs``,
            ... for configurable MDPs; ``episodes``, ... for games: see
            :mod:`bilevel_agents.families`). Unknown names raise ``ValueError``.

    Defaults: each method's documented protocol on each family, from the family's
    :meth:`~bilevel_agents.families.base.Family.default_options` and the method's own
    :attr:`family_defaults` (docs/methods.md lists them).
    """

    #: short name used by the CLI and in result folders
    name: ClassVar[str] = "leader"
    #: families the method is defined on (``None``: every family)
    families: ClassVar[tuple[type[Family], ...] | None] = None
    #: critic kind by default, or a dict {family class: kind}
    default_critic: ClassVar[str | None | dict[type[Family], str | None]] = None
    #: method-specific default options per family: {family class: {option: value}}
    family_defaults: ClassVar[dict[type[Family], dict[str, Any]]] = {}
    #: whether the method estimates from samples (False: the family's sampling options and
    #: sampling defaults do not apply, e.g. exact ascent)
    samples: ClassVar[bool] = True

    def __init__(self, br: Any, *, seed: int | None = None, theta0: Any = None,
                 critic: Any = None, critic_kwargs: dict[str, Any] | None = None,
                 **options: Any):
        family_cls = family_for(br)
        if self.families is not None and not issubclass(family_cls, self.families):
            allowed = ", ".join(f.label for f in self.families)
            raise ValueError(f"{self.name} is defined on {allowed}; got {family_cls.label} "
                             f"({type(br.problem).__name__})")
        defaults = family_cls.default_options(br, self.samples)
        for klass in reversed(family_cls.__mro__):
            for cls in reversed(type(self).__mro__):
                defaults.update(getattr(cls, "family_defaults", {}).get(klass, {}))
        options = {**defaults, **options}
        step_names = _option_names(StepOptions)
        family_names = _option_names(family_cls.Options) if self.samples else ()
        unknown = sorted(set(options) - set(step_names) - set(family_names))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for {self.name} on "
                             f"{family_cls.label}; allowed: {sorted(step_names + family_names)}")
        self.br = br
        self.seed = None if seed is None else check_int("seed", seed, 0)
        self.step_options = StepOptions(**{k: v for k, v in options.items() if k in step_names})
        if self.step_options.clip_groups is not None:
            size = int(np.prod(br.config_space.shape))
            if sum(self.step_options.clip_groups) != size:
                raise ValueError(f"clip_groups must be positive sizes summing to {size}, got "
                                 f"{self.step_options.clip_groups!r}")
        if (self.step_options.geometry == "simplex"
                and getattr(br.problem, "config_parameterisation", "free") != "softmax"):
            raise ValueError(f"geometry='simplex' needs θ to be softmax logits "
                             f"(config_parameterisation 'softmax'); "
                             f"{type(br.problem).__name__}'s θ are not")
        self.family: Family = family_cls(br, **{k: v for k, v in options.items()
                                                if k in family_names})
        self.rng = np.random.default_rng(seed)
        if theta0 is None:
            theta0 = self.family.initial_theta(self.rng, self.step_options.init_scale)
        self.br.set_config(theta0)
        self.iteration = 0
        shape = br.config_space.shape
        self._adam = {"m": np.zeros(shape), "v": np.zeros(shape), "t": 0}
        #: per-iteration diagnostics set by estimate_gradient (critic error, episodes, ...)
        self.last_metrics: dict[str, float] = {}
        self.critic_kwargs = dict(critic_kwargs or {})
        kind = critic if critic is not None else self._default_critic_kind()
        self.critic = self.family.make_critic(self, kind, self.critic_kwargs)

    def _default_critic_kind(self) -> str | None:
        kind = self.default_critic
        if isinstance(kind, dict):
            kind = next((v for k, v in kind.items() if isinstance(self.family, k)), None)
        if kind is None and self.samples and self.family.partial_needs_critic:
            kind = "td"
        return kind

    # ------------------------------------------------------------------ θ and the step
    @property
    def theta(self) -> np.ndarray:
        """The current leader parameter (a copy)."""
        return self.br.config

    @property
    def lr(self) -> float:
        """The initial step size."""
        return self.step_options.lr

    @property
    def current_lr(self) -> float:
        """The step size of the next update (constant unless ``lr_final`` is set)."""
        opt = self.step_options
        if opt.lr_final is None:
            return opt.lr
        frac = min(self.iteration / opt.lr_decay_iterations, 1.0)
        return opt.lr * (opt.lr_final / opt.lr) ** frac

    def clip(self, grad: np.ndarray) -> np.ndarray:
        """Global-norm clipping, or per group with ``clip_groups``."""
        opt = self.step_options
        if opt.clip_groups is None:
            return clip_by_global_norm(grad, opt.max_grad_norm)
        parts = np.split(grad.ravel(), np.cumsum(opt.clip_groups)[:-1])
        step = np.concatenate([clip_by_global_norm(p, opt.max_grad_norm) for p in parts])
        return step.reshape(grad.shape)

    def _adam_direction(self, grad: np.ndarray, b1: float = 0.9, b2: float = 0.999,
                        eps: float = 1e-8) -> np.ndarray:
        """Adam's bias-corrected direction m̂ / (√v̂ + ε) (Kingma & Ba, 2015)."""
        m, v = self._adam["m"], self._adam["v"]
        m[:] = b1 * m + (1 - b1) * grad
        v[:] = b2 * v + (1 - b2) * grad**2
        self._adam["t"] = t = self._adam["t"] + 1
        return (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)

    def update(self) -> dict[str, float]:
        """One outer iteration: estimate, clip, optimiser step, project, re-solve the follower.

        An iteration without gradient information (a game leader's exploration phase)
        leaves θ and the optimiser's state unchanged. A step to a θ the problem refuses (the
        LQR game's non-stabilisable gains) is rejected on families whose feasible set is not
        a box (``rejected_step = 1``, θ kept); elsewhere the error propagates.
        """
        grad = self.estimate_gradient()
        informative = grad is not None
        grad = (np.zeros(self.br.config_space.shape) if grad is None
                else np.asarray(grad, dtype=np.float64))
        if not np.all(np.isfinite(grad)):
            raise FloatingPointError(f"non-finite gradient estimate at iteration {self.iteration}")
        step = grad
        if self.step_options.geometry == "simplex":
            step = simplex_direction(grad, self.theta, self.step_options.simplex_floor)
        step = self.clip(step)
        if self.step_options.optimizer == "adam" and informative:
            step = self._adam_direction(step)
        space = self.br.config_space
        theta = np.clip(self.theta + self.current_lr * step, space.low, space.high)
        rejected = 0.0
        try:
            self.br.set_config(theta)
        except ValueError:
            if not self.family.rejects_infeasible_steps:
                raise
            rejected = 1.0
        self.iteration += 1
        return {"grad_norm": float(np.linalg.norm(grad)), "rejected_step": rejected,
                **self.last_metrics}

    # ------------------------------------------------------------------ the estimate
    def statistics_batch(self, batch: Any) -> Any:
        """The batch the critic and the follower-response statistics come from (default: the
        on-policy batch; HPGD (oracle) draws an extra one)."""
        return batch

    def method_metrics(self, batch: Any, stats: Any) -> dict[str, float]:
        """Extra per-iteration diagnostics of the method (default: none)."""
        return {}

    def guiding_term(self, batch: Any, stats: Any) -> Any:
        """The follower-response term of the estimate, in the family's term algebra, or
        ``None`` for a first-order method (the method's defining piece)."""
        return None

    def estimate_gradient(self) -> np.ndarray | None:
        """One estimate of ``∇θ J_L`` at the current θ from a fresh batch (``None``: no
        gradient information this iteration).

        The pipeline of every sample-based method: batch → (statistics batch) → critic update
        (and the family's own estimates) → partial term + guiding term → gradient.
        """
        return self.gradient_from_batch(self.family.collect(self))

    def gradient_from_batch(self, batch: Any) -> np.ndarray | None:
        """:meth:`estimate_gradient` for a given on-policy batch (the critic learns from it)."""
        family = self.family
        stats = self.statistics_batch(batch)
        metrics = family.batch_metrics(batch)
        metrics.update(self.method_metrics(batch, stats))
        if self.critic is not None:
            metrics.update(self.critic.update(family.critic_data(self, stats), self.br))
        metrics.update(family.learn(self, stats))
        self.last_metrics = metrics
        if family.exploring(self):
            return None
        return self.combine(batch, family.partial_term(self, batch),
                            self.guiding_term(batch, stats))

    def combine(self, batch: Any, partial: Any, guide: Any) -> np.ndarray:
        """The estimate from its two terms: ``∇θ`` of partial + guide, one autograd pass per
        batch (a method that weighs the terms differently overrides this)."""
        return self.family.gradient(self, batch, partial if guide is None else partial + guide)

    def learn(self, iterations: int, **train_kwargs: Any) -> list[dict[str, float]]:
        """Train for ``iterations`` outer iterations with the shared loop
        (:func:`bilevel_agents.trainer.train`; progress bar, logs, checkpoints)."""
        from bilevel_agents.trainer import train

        return train(self, iterations, **train_kwargs)

    # ------------------------------------------------------------------ bookkeeping
    def hparams(self) -> dict[str, Any]:
        """The settings that define the run (saved beside the results)."""
        critic = type(self.critic).__name__ if self.critic is not None else None
        out = {"leader": self.name, "seed": self.seed, "beta": self.br.beta,
               **dataclasses.asdict(self.step_options)}
        if self.samples:
            out.update(self.family.hparams())
        out.update({"critic": critic, "critic_kwargs": self.critic_kwargs})
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything that affects the future: θ, iteration, generator, optimiser, critic, the
        family's state (replay buffers) and the best response's (the follower's warm start)."""
        state = {"theta": self.theta, "iteration": self.iteration,
                 "rng": self.rng.bit_generator.state,
                 "adam": {"m": self._adam["m"].copy(), "v": self._adam["v"].copy(),
                          "t": int(self._adam["t"])},
                 "family": self.family.state_dict(),
                 "best_response": self.br.state_dict()}
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the follower exactly as it was, without a re-solve)."""
        if "best_response" in state:
            self.br.load_state_dict(state["best_response"])
        else:
            self.br.set_config(state["theta"])
        self.iteration = int(state["iteration"])
        self.rng.bit_generator.state = state["rng"]
        if "adam" in state:
            adam = state["adam"]
            self._adam = {"m": np.array(adam["m"]), "v": np.array(adam["v"]), "t": int(adam["t"])}
        if "family" in state:
            self.family.load_state_dict(state["family"])
        if self.critic is not None and "critic" in state:
            self.critic.load_state_dict(state["critic"])


def preset(cls: type[Leader], name: str, doc: str, **fixed: Any) -> type[Leader]:
    """A named variant of a method with other defaults (``HPGD`` with ``critic="mc"``, ...).

    The variant is the same class with ``fixed`` keyword arguments as defaults (the caller's
    own arguments win), registered under its own CLI ``name``.
    """

    def __init__(self, br: Any, **kwargs: Any) -> None:
        cls.__init__(self, br, **{**fixed, **kwargs})

    return type(cls.__name__ + "".join(p.title() for p in name.split("_")[1:]), (cls,),
                {"name": name, "__doc__": doc, "__init__": __init__, "preset": dict(fixed),
                 "__module__": cls.__module__})
