"""The one interface of every compression method: ``Method`` (init, apply, tx, store).

A method is a frozen dataclass of settings (bound once) with pure functions
over a parameter pytree, in the shape of optax's ``GradientTransformation``
and jaxpruner's updater::

    state = method.init(params, key)        # latent + aux: one pytree
    params = method.apply(state)            # what the model runs (straight-through inside)
    tx = method.tx(optax.adam(1e-3))        # trains state["latent"]: masks kept, latent clipped...
    tree = method.store(state)              # params with codec containers: archive.save writes it

Every method selects leaves by path (``include``: a regex matched against the
"/"-joined path, or a ``(name, leaf) -> bool`` predicate; ``exclude``: names;
``keep_float``: ``"first"``/``"last"`` in execution order, resolved by
``bind``). ``combine(a, b, ...)`` runs several methods on disjoint leaves
(each takes what the earlier ones left) and is itself a ``Method``.

State, the same layout for every method and every combination::

    {"latent": {"params": P, "own": (own_0, ...)}, "aux": (aux_0, ...)}

``P`` is the params tree in which each member's leaves hold their trainable
latent array (latent weights, a codebook, a scale vector); ``own_i`` maps each
leaf name of member ``i`` to its other trainable arrays (TTQ's scales, or
``{}``), ``aux_i`` to its constants (sharing indices, pattern signs, kept
masks). A leaf no member selects is *float*: ``tx`` trains it with ``inner``
and keeps its exact zeros (weights pruned before) when it is a matrix or a
kernel, ``store`` leaves it an array. Exact zeros are how pruning composes:
every method keeps the zeros of the weights it is given.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zylax.transforms import order, pruning
from zylax.transforms import tree as ztree
from zylax.transforms.tree import KERNELS, Selector

State = dict
"""``{"latent": {"params": ..., "own": (...)}, "aux": (...)}`` (module docstring)."""

EXECUTION_ORDER = ("first", "last")
"""What ``keep_float`` may name: the first and last selected layers a run of the model calls."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Method:
    """Settings of one compression method (subclasses add theirs) and the common interface.

    Attributes:
      include: the leaves it may take: a regex matched against the whole
        "/"-joined path (``".*kernel"``, the default) or a predicate
        ``(name, leaf) -> bool``.
      exclude: leaf names it leaves alone.
      keep_float: ``"first"``, ``"last"``: the first and last layers a run of
        the model calls stay float (``bind`` resolves them).
      epochs: epochs of retraining after ``init`` (``compress.run``'s stage).
      lr_scale: the stage's learning rate as a multiple of the run's.
    """

    include: Selector = KERNELS
    exclude: tuple[str, ...] = ()
    keep_float: tuple[str, ...] = ()
    epochs: int = 1
    lr_scale: float = 1.0

    name: ClassVar[str] = "method"
    carries: ClassVar[bool] = True
    """Whether the leaves it took stay in its form through later stages (quantizers do;
    pruning leaves float weights with zeros that every later method keeps)."""
    recalibrates: ClassVar[bool] = False
    """Whether BatchNorm's statistics are made again after its stage, for the weights
    inference runs (``train.batch_statistics``): training ran far other ones (sampled)."""
    paper_learning_rate: ClassVar[float | None] = None
    """The rate its paper trains at, which ``compress.run`` takes instead of a sweep when the
    method leads the chain; None: the sweep (a held-out loss cannot rank the rates of an
    objective that is mostly its penalty)."""

    def __post_init__(self):
        unknown = sorted(set(self.keep_float) - set(EXECUTION_ORDER))
        if unknown:
            raise ValueError(f"{self.name}: keep_float may hold 'first' and 'last', got {unknown}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"{self.name}: epochs must be an integer >= 0, got {self.epochs!r}")
        if ztree.is_concrete(self.lr_scale) and not 0 < self.lr_scale < float("inf"):
            raise ValueError(f"{self.name}: lr_scale must be positive, got {self.lr_scale!r}")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "keep_float", tuple(self.keep_float))

    # -- what a method defines: the leaves it took, as flat dicts keyed by path --------------

    def accepts(self, name: str, leaf) -> bool:
        """Whether the method can take this leaf at all (e.g. SEP-Net: k x k kernels)."""
        del name, leaf
        return True

    def init_leaves(self, leaves: dict, key: jax.Array) -> tuple[dict, dict, dict]:
        """``(latent, own, aux)`` of the selected ``leaves`` ``{name: array}``."""
        raise NotImplementedError

    def apply_leaves(self, latent: dict, own: dict, aux: dict, rng=None) -> dict:
        """``{name: array the model runs}`` of the method's leaves (straight-through)."""
        raise NotImplementedError

    def leaf_tx(self, inner: optax.GradientTransformation, steps: int | None
                ) -> optax.GradientTransformation:
        """The transformation of ``{"latent": {name: array}, "own": {name: ...}}``; default
        ``inner``."""
        del steps
        return inner

    def store_leaves(self, latent: dict, own: dict, aux: dict) -> dict:
        """``{name: codec container or array}`` of the method's leaves, for ``archive.save``."""
        raise NotImplementedError

    def penalty_leaves(self, latent: dict, own: dict, aux: dict) -> jax.Array:
        """A term added to the training loss (per example); 0 for most methods."""
        del latent, own, aux
        return jnp.zeros((), jnp.float32)

    def stages(self) -> list["Method"]:
        """The stages ``compress.run`` retrains this method in: itself (pruning in cycles
        gives one per cycle)."""
        return [self]

    def store_collections(self, collections: dict) -> dict:
        """The model's other collections (``batch_stats``, ...) as they are saved; unchanged
        for most methods."""
        return collections

    # -- the interface, the same for every method ---------------------------------------------

    def bind(self, model, variables, *args, **kwargs) -> "Method":
        """The method with ``keep_float`` resolved to leaf names (``exclude``), found by running
        ``model.apply(variables, *args, **kwargs)`` once in inference mode."""
        if not self.keep_float:
            return self
        ends = order.first_and_last(model, variables, *args, include=self.include, **kwargs)
        picked = {"first": ends[0], "last": ends[-1]}
        names = tuple(dict.fromkeys([*self.exclude, *(picked[k] for k in self.keep_float)]))
        bound = dataclasses.replace(self, exclude=names, keep_float=())
        if "params" in variables and not bound.selected(variables["params"]):
            kept = sorted({picked[k] for k in self.keep_float})
            raise ValueError(f"{self.name}: keep_float {self.keep_float} keeps {kept} float, "
                             f"which are all the leaves it selects; pass keep_float=() (CLI: "
                             f"--keep-float none) to compress them")
        return bound

    def sized(self, examples: int) -> "Method":
        """The method told the training set's size: a method whose loss term is scaled by it
        has an ``examples`` setting, filled here when None (``compress.run`` calls this)."""
        if getattr(self, "examples", 0) is None:
            return dataclasses.replace(self, examples=examples)
        return self

    def init(self, params, key: jax.Array) -> State:
        """The state of ``params`` (module docstring)."""
        return combine(self).init(params, key)

    def apply(self, state: State, rng: jax.Array | None = None):
        """The params the model runs; ``rng`` for methods that sample (training)."""
        return combine(self).apply(state, rng)

    def tx(self, inner: optax.GradientTransformation, steps: int | None = None
           ) -> optax.GradientTransformation:
        """``inner`` made to train ``state["latent"]`` under the method's rules; ``steps``
        (the run's length) drives schedules such as gradual pruning."""
        return combine(self).tx(inner, steps)

    def store(self, state: State) -> dict:
        """The params tree to save: the method's leaves as codec containers, others arrays."""
        return combine(self).store(state)

    def penalty(self, state: State) -> jax.Array:
        """The method's term of the training loss (0 for most)."""
        return combine(self).penalty(state)

    def check(self, params) -> None:
        """Refuses settings that fit no leaf of ``params`` (a regex matching none, an empty
        selection) before anything trains; ``keep_float`` is not resolved here."""
        names = dataclasses.replace(self, keep_float=()).selected(params)
        if not names:
            raise ValueError(f"{self.name}: selects no leaf of "
                             f"{list(ztree.named_leaves(params))[:6]}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in ("include",) and isinstance(value, dict):
                unused = [p for p in value if not any(re.fullmatch(p, n) for n in names)]
                if unused:
                    raise ValueError(f"{self.name}: {field.name} patterns {unused} match none of "
                                     f"its leaves (patterns match the whole path, e.g. "
                                     f"{names[:4]})")

    def selected(self, params, taken: frozenset = frozenset()) -> list[str]:
        """The names of the leaves of ``params`` the method takes, not counting ``taken``."""
        if self.keep_float:
            raise ValueError(f"{self.name}: keep_float {self.keep_float} is execution order; "
                             "call .bind(model, variables, sample) first (compress.run does)")
        pick = ztree.selector_fn(self.include)
        leaves = ztree.named_leaves(params)
        unknown = sorted(set(self.exclude) - set(leaves))
        if unknown:
            raise ValueError(f"{self.name}: exclude names leaves that are not in the params: "
                             f"{unknown[:5]}")
        return [name for name, leaf in leaves.items()
                if name not in taken and name not in self.exclude and pick(name, leaf)
                and self.accepts(name, leaf)]


@dataclasses.dataclass(frozen=True)
class Combined:
    """Several methods on disjoint leaves, as one method (``combine``)."""

    members: tuple[Method, ...]

    @property
    def name(self) -> str:
        """``"prune"``, or ``"pattern+share"``."""
        return "+".join(m.name for m in self.members)

    def check(self, params) -> None:
        """Every member's ``check``."""
        for member in self.members:
            member.check(params)

    def bind(self, model, variables, *args, **kwargs) -> "Combined":
        """Every member bound (``Method.bind``)."""
        return Combined(tuple(m.bind(model, variables, *args, **kwargs) for m in self.members))

    def sized(self, examples: int) -> "Combined":
        """Every member told the training set's size (``Method.sized``)."""
        return Combined(tuple(m.sized(examples) for m in self.members))

    def selections(self, params, taken: frozenset = frozenset()) -> list[list[str]]:
        """Each member's leaf names: those it selects among the ones the earlier members (and
        ``taken``) left; ``ValueError`` for a member left none."""
        out: list[list[str]] = []
        for member in self.members:
            earlier = taken.union(*out)
            names = member.selected(params, earlier)
            if not names:
                raise ValueError(f"{member.name}: selects no leaf (include {member.include!r}, "
                                 f"exclude {list(member.exclude)[:4]}, earlier methods took "
                                 f"{len(earlier)}; leaves "
                                 f"{list(ztree.named_leaves(params))[:6]})")
            out.append(names)
        return out

    def init(self, params, key: jax.Array, taken: frozenset = frozenset()) -> State:
        """Each member takes its leaves among those the earlier members (and ``taken``) left."""
        leaves = ztree.named_leaves(params)
        latent, owns, auxes = {}, [], []
        for i, (member, names) in enumerate(zip(self.members, self.selections(params, taken))):
            chosen = {n: leaves[n] for n in names}
            ztree.check_finite(chosen)
            own_latent, own, aux = member.init_leaves(chosen, jax.random.fold_in(key, i))
            latent.update(own_latent)
            owns.append({n: own.get(n, {}) for n in names})
            auxes.append({n: aux.get(n, {}) for n in names})
        tree = ztree.map_named(lambda n, leaf: latent.get(n, leaf), params)
        return {"latent": {"params": tree, "own": tuple(owns)}, "aux": tuple(auxes)}

    def _views(self, state: State):
        """Per member: ``(latent {name: array}, own, aux)``; and the float leaves' names."""
        flat = ztree.named_leaves(state["latent"]["params"])
        views, claimed = [], set()
        for own, aux in zip(state["latent"]["own"], state["aux"]):
            views.append(({n: flat[n] for n in own}, own, aux))
            claimed.update(own)
        return views, [n for n in flat if n not in claimed]

    def apply(self, state: State, rng: jax.Array | None = None):
        """The params the model runs: each member's leaves applied, float leaves as they are."""
        views, _ = self._views(state)
        out = {}
        for i, (member, (latent, own, aux)) in enumerate(zip(self.members, views)):
            key = None if rng is None else jax.random.fold_in(rng, i)
            out.update(member.apply_leaves(latent, own, aux, key))
        return ztree.map_named(lambda n, leaf: out.get(n, leaf), state["latent"]["params"])

    def stages(self) -> list["Combined"]:
        """One stage: several methods combined retrain together."""
        return [self]

    def store_collections(self, collections: dict) -> dict:
        """``collections`` through each member's ``store_collections``."""
        for member in self.members:
            collections = member.store_collections(collections)
        return collections

    def penalty(self, state: State) -> jax.Array:
        """The sum of the members' loss terms."""
        views, _ = self._views(state)
        return sum((m.penalty_leaves(*view) for m, view in zip(self.members, views)),
                   jnp.zeros((), jnp.float32))

    def store(self, state: State) -> dict:
        """Params with each member's leaves as its codec containers, float leaves as arrays."""
        views, _ = self._views(jax.device_get(state))
        out = {}
        for member, view in zip(self.members, views):
            out.update(member.store_leaves(*view))
        return ztree.map_named(lambda n, leaf: out[n] if n in out else np.asarray(leaf),
                               jax.device_get(state["latent"]["params"]))

    def tx(self, inner: optax.GradientTransformation, steps: int | None = None
           ) -> optax.GradientTransformation:
        """Each member's ``leaf_tx`` on its view of the latent; ``keep_zeros(inner)`` on the
        float leaves."""
        member_txs = [m.leaf_tx(inner, steps) for m in self.members]
        float_tx = pruning.keep_zeros(inner, min_ndim=2)

        def split(tree, names_of):
            flat = ztree.named_leaves(tree["params"])
            views = [{"latent": {n: flat[n] for n in names}, "own": own}
                     for names, own in zip(names_of, tree["own"])]
            claimed = {n for names in names_of for n in names}
            return views, {n: v for n, v in flat.items() if n not in claimed}

        def names(latent):
            return [list(own) for own in latent["own"]]

        def init_fn(latent):
            views, floats = split(latent, names(latent))
            return (tuple(t.init(v) for t, v in zip(member_txs, views)), float_tx.init(floats))

        def update_fn(updates, state, latent=None):
            if latent is None:
                raise ValueError("a method's tx needs params in update(); call "
                                 "tx.update(grads, state, latent)")
            keys = names(latent)
            views, floats = split(updates, keys)
            param_views, param_floats = split(latent, keys)
            new_views, new_states = [], []
            for t, view, s, p in zip(member_txs, views, state[0], param_views):
                u, s = t.update(view, s, p)
                new_views.append(u)
                new_states.append(s)
            new_floats, float_state = float_tx.update(floats, state[1], param_floats)
            flat = dict(new_floats)
            for view in new_views:
                flat.update(view["latent"])
            merged = {"params": ztree.map_named(lambda n, _: flat[n], updates["params"]),
                      "own": tuple(v["own"] for v in new_views)}
            return merged, (tuple(new_states), float_state)

        return optax.GradientTransformation(init_fn, update_fn)


def integer_setting(method: str, field: str, value, low: int, high: int | None) -> int:
    """``value`` as an int in ``[low, high]`` (``high`` None: no upper bound); a one-line
    ``ValueError`` naming ``method`` and ``field`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or \
            (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{method}: {field} must be an integer {bound}, got {value!r}")
    return int(value)


def real_setting(method: str, field: str, value, what: str, ok) -> None:
    """Refuses a ``value`` that is no real number or fails ``ok``: a one-line ``ValueError``
    naming ``method``, ``field`` and ``what`` it must be."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not ok(float(value)):
        raise ValueError(f"{method}: {field} must be {what}, got {value!r}")


def combine(*methods: Method | Combined) -> Combined:
    """One method made of ``methods`` on disjoint leaves: each takes its leaves among those the
    earlier ones left (e.g. ``combine(pattern(), share())``: k x k kernels binarized, the other
    kernels shared)."""
    members: list[Method] = []
    for m in methods:
        members.extend(m.members if isinstance(m, Combined) else (m,))
    if not members:
        raise ValueError("combine needs at least one method")
    return Combined(tuple(members))


def latent_and_own(latent_tx: optax.GradientTransformation,
                   own_tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """A ``leaf_tx`` from one transformation of the latent arrays (``view["latent"]``) and one
    of the other trainable arrays (``view["own"]``)."""
    def init_fn(view):
        return latent_tx.init(view["latent"]), own_tx.init(view["own"])

    def update_fn(updates, state, view=None):
        latent, s0 = latent_tx.update(updates["latent"], state[0],
                                      None if view is None else view["latent"])
        own, s1 = own_tx.update(updates["own"], state[1], None if view is None else view["own"])
        return {"latent": latent, "own": own}, (s0, s1)

    return optax.GradientTransformation(init_fn, update_fn)
