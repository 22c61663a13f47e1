"""RuleSet: which rule, with which parameters, each node gets — by op class, op, module type, module
path and first layer. Presets are TOML files in the top-level `rules/` folder (shipped in the wheel
as `lrpgraph.presets.tables`).

Precedence, most specific first: a matching override (module path or type), the first-layer table,
the op's own name (e.g. "aten.linear.default"), its op class ("linear"), the op class's default.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import importlib.resources
import inspect
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import ops as _registered  # noqa: F401 - fills the registry
from ..capture.fingerprint import token
from ..errors import RuleSetError
from ..ops.params import validate
from ..ops.registry import CLASSES, DEFAULTS, KERNELS, Kernel, kernel
from ..ops.table import TABLE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RuleSpec = str | Mapping[str, Any]
_SECTIONS = frozenset({"description", "params", "rules", "first", "override", "name", "positional", "strict", "method"})
SEEDS = ("value", "one-hot")  # a class id seeds the output's value there, or 1
CONTRASTIVE = ("seed", "passes")  # contrastive=True: one pass with e_t − mean of the others, or Nmax(P − Q) of two
SELECTIONS = ("relevant", "constant")  # a scan's selection (Δ, Ā, B̄, C) takes relevance, or is held constant
_EMPTY = inspect.Parameter.empty
_RULED_OPS = frozenset(str(t) for t, entry in TABLE.items() if entry.adapter is not None)  # op names a set may key


@dataclass(frozen=True)
class Override:
    """Rules for nodes inside modules whose path matches `module` (glob) and/or whose class is `type`."""

    rules: Mapping[str, RuleSpec]
    module: str | None = None
    type: str | None = None

    def matches(self, stack: list[tuple[str, str]]) -> bool:
        for path, type_name in stack:
            path_ok = self.module is None or fnmatch.fnmatchcase(path, self.module)
            type_ok = self.type is None or self.type in (type_name, type_name.rsplit(".", 1)[-1])
            if path_ok and type_ok:
                return True
        return False


@dataclass(frozen=True)
class Choice:
    """The rule a node gets: its kernel and the bound keyword parameters."""

    kernel: Kernel
    params: dict[str, Any]

    @property
    def name(self) -> str:
        return self.kernel.name


@dataclass
class RuleSet:
    """A method: rule per op class (or op), first-layer rules, module overrides, shared parameters."""

    rules: dict[str, RuleSpec] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    first: dict[str, RuleSpec] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)
    name: str = "custom"
    description: str = ""
    positional: str | None = None  # PA-LRP: "abs" or "signed" positional relevance; None: positions are constants
    strict: bool = False  # every op class a node needs must be listed (methods that cover only some ops), except
    # classes declared exact (they hand on what they receive: re-indexing, scalings), which keep their default
    seed: str = "value"  # what a class id seeds: the output's value there, or "one-hot" 1
    contrastive: str = "seed"  # contrastive=True: one pass ("seed"), or two normalised passes, Nmax(P − Q)
    fold_batchnorm: bool = True  # merge eval batch norm into the layer before it (Zennit's canonizer)
    selection: str = "relevant"  # "constant": MambaLRP, a scan is linear in its input (flow/selection.py)

    def __post_init__(self):
        for field_name in ("rules", "params", "first"):
            if not isinstance(getattr(self, field_name), Mapping):
                raise RuleSetError(
                    f"RuleSet {field_name} must be a dict, not {type(getattr(self, field_name)).__name__}"
                )
        if isinstance(self.overrides, (str, Mapping)) or not isinstance(self.overrides, (list, tuple)):
            raise RuleSetError(f"RuleSet overrides must be a list, not {type(self.overrides).__name__}")
        if self.positional not in (None, "abs", "signed"):
            raise RuleSetError(f"positional must be 'abs', 'signed' or absent, not {self.positional!r}")
        if (
            self.seed not in SEEDS
            or self.contrastive not in CONTRASTIVE
            or not isinstance(self.fold_batchnorm, bool)
            or self.selection not in SELECTIONS
        ):
            raise RuleSetError(
                f"rule set '{self.name}': [method] seed must be one of {SEEDS}, contrastive one of {CONTRASTIVE}, "
                f"fold_batchnorm true or false, selection one of {SELECTIONS}; got {self.seed!r}, "
                f"{self.contrastive!r}, {self.fold_batchnorm!r}, {self.selection!r}"
            )
        self.overrides = [o if isinstance(o, Override) else _override(o) for o in self.overrides]
        for table in [self.rules, self.first, *(o.rules for o in self.overrides)]:
            for key, spec in table.items():
                self._check(key, spec)
        known = self.known_params()
        unknown = sorted(set(self.params) - known)
        if unknown:
            raise RuleSetError(
                f"rule set '{self.name}': unknown parameter(s) {', '.join(unknown)}; "
                f"its rules take: {', '.join(sorted(known)) or 'none'}"
            )
        self.params = {key: self._valid(key, value) for key, value in self.params.items()}
        self._check_relations()

    def _valid(self, key: str, value: Any, where: str = "") -> Any:
        try:
            return validate(key, value)
        except ValueError as error:
            raise RuleSetError(f"rule set '{self.name}'{where}: parameter {error}") from None

    def _check(self, key: str, spec: RuleSpec) -> None:
        name, inline = _split(spec, key)
        if key in KERNELS:
            kernel(key, name)
        elif key.startswith("aten.") or key in _RULED_OPS:
            if key not in _RULED_OPS:
                raise RuleSetError(f"rule set '{self.name}': no registered op named '{key}'")
            if not any(name in kernels for kernels in KERNELS.values()):
                raise RuleSetError(f"rule set '{self.name}': unknown rule '{name}' for op '{key}'")
        else:
            raise RuleSetError(
                f"rule set '{self.name}': '{key}' is neither an op class nor an op; "
                f"op classes: {', '.join(sorted(KERNELS))}"
            )
        for param, value in inline.items():
            self._valid(param, value, f", rule '{name}' for {key}")

    def _candidates(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(op class, rule name, inline parameters) of every rule this set can choose."""
        found = [(c, n, {}) for c, n in DEFAULTS.items() if c not in self.rules]
        for table in [self.rules, self.first, *(o.rules for o in self.overrides)]:
            for key, spec in table.items():
                name, inline = _split(spec, key)
                classes = [key] if key in KERNELS else [c for c, kernels in KERNELS.items() if name in kernels]
                found += [(c, name, inline) for c in classes]
        return found

    def _check_relations(self) -> None:
        """Relations between a rule's parameters (low < high, alpha − beta = 1) where all of them are given."""
        for op_class, name, inline in self._candidates():
            chosen = KERNELS[op_class].get(name)
            if chosen is None or chosen.check is None:
                continue
            values = {**self.params, **inline}
            if {k for k, default in chosen.params.items() if default is _EMPTY} - set(values):
                continue  # a required parameter is missing: reported when the rule is chosen
            try:
                chosen.bind(values)
            except RuleSetError as error:
                raise RuleSetError(f"rule set '{self.name}': {error}") from None

    def known_params(self) -> set[str]:
        """Parameter names the rules this set can choose accept (the defaults of op classes included)."""
        names: set[str] = set()
        specs: list[tuple[str, RuleSpec]] = [(c, n) for c, n in DEFAULTS.items()]
        for table in [self.rules, self.first, *(o.rules for o in self.overrides)]:
            specs += list(table.items())
        for key, spec in specs:
            rule_name, _ = _split(spec, key)
            classes = [key] if key in KERNELS else list(KERNELS)
            for op_class in classes:
                k = KERNELS[op_class].get(rule_name)
                if k is not None:
                    names.update(k.params)
        return names

    def seed_style(self, contrastive: bool) -> str:
        """What a class id seeds (targets.STYLES): the method's seed, or its kind of contrastive seed."""
        if contrastive:
            return "passes" if self.contrastive == "passes" else "contrastive"
        return self.seed

    def with_params(self, **overrides: Any) -> RuleSet:
        """A copy with shared parameters replaced (each name must be taken by one of its rules).

        `positional="abs"|"signed"` switches how a positional preset sums rotary relevance.
        """
        if "positional" in overrides:
            mode = overrides.pop("positional")
            if self.positional is None:
                raise RuleSetError(f"preset '{self.name}' gives positions no relevance; use 'pa-lrp'")
            clone = copy.copy(self)
            clone.positional = mode
            clone.__post_init__()
            return clone.with_params(**overrides) if overrides else clone
        known = self.known_params()
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise RuleSetError(
                f"preset '{self.name}' has no parameter {', '.join(unknown)}; it takes: {', '.join(sorted(known))}"
            )
        clone = copy.copy(self)
        clone.params = {**self.params, **overrides}
        clone.__post_init__()
        return clone

    def with_rules(self, **rules: RuleSpec) -> RuleSet:
        """A copy with the rules of some op classes replaced, e.g. with_rules(conv="zplus")."""
        clone = copy.copy(self)
        clone.rules = {**self.rules, **rules}
        clone.__post_init__()
        return clone

    def choose(self, op_class: str, op: str, stack: list[tuple[str, str]], first: bool) -> Choice:
        """The rule for one node."""
        spec = None
        for override in reversed(self.overrides):
            if override.matches(stack):
                spec = override.rules.get(op) or override.rules.get(op_class)
                if spec is not None:
                    break
        if spec is None and first:
            spec = self.first.get(op_class)
        if spec is None:
            spec = self.rules.get(op) or self.rules.get(op_class)
        if spec is None and self.strict and not CLASSES[op_class].exact:
            raise RuleSetError(
                f"rule set '{self.name}' has no rule for op class '{op_class}' ({op}): "
                "the method does not cover this op"
            )
        if spec is None:
            spec = DEFAULTS.get(op_class)
        if spec is None:
            raise RuleSetError(f"rule set '{self.name}' has no rule for op class '{op_class}'")
        name, inline = _split(spec, op_class)
        chosen = kernel(op_class, name)
        return Choice(chosen, chosen.bind({**self.params, **inline}))

    def fingerprint(self) -> str:
        """A key that changes whenever any choice or parameter of the set does (plans are cached by it)."""

        def plain(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return ("tensor", token(value), tuple(value.shape), value._version)
            if isinstance(value, Mapping):
                return tuple(sorted((k, plain(v)) for k, v in value.items()))
            if isinstance(value, (list, tuple)):
                return tuple(plain(v) for v in value)
            if isinstance(value, Override):
                return (value.module, value.type, plain(value.rules))
            return value

        return repr(
            plain(
                (
                    self.rules,
                    self.params,
                    self.first,
                    self.overrides,
                    self.positional,
                    self.strict,
                    self.fold_batchnorm,
                    self.selection,
                )
            )
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "custom") -> RuleSet:
        extra = sorted(set(data) - _SECTIONS)
        if extra:
            raise RuleSetError(
                f"preset '{name}': unknown section(s) {', '.join(extra)}; allowed: {', '.join(sorted(_SECTIONS))}"
            )
        overrides = data.get("override", [])
        if not isinstance(overrides, (list, tuple)):
            raise RuleSetError(f"preset '{name}': [[override]] must be a list of tables")
        return cls(
            rules=_table(data, "rules", name),
            params=_table(data, "params", name),
            first=_table(data, "first", name),
            overrides=[_override(o) for o in overrides],
            name=str(data.get("name", name)),
            description=str(data.get("description", "")),
            positional=dict(data.get("positional", {})).get("mode") if "positional" in data else None,
            strict=bool(data.get("strict", False)),
            **_method(data, name),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> RuleSet:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise RuleSetError(f"cannot read preset file {path}: {error}") from None
        return cls.from_dict(data, name=path.stem)


def _method(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The [method] table: seed, contrastive, fold_batchnorm, selection — how the method is run beyond its rules."""
    method = _table(data, "method", name)
    extra = sorted(set(method) - {"seed", "contrastive", "fold_batchnorm", "selection"})
    if extra:
        raise RuleSetError(
            f"preset '{name}': [method] takes seed, contrastive, fold_batchnorm and selection, not {extra}"
        )
    return method


def _table(data: Mapping[str, Any], key: str, name: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise RuleSetError(f"preset '{name}': [{key}] must be a table, not {type(value).__name__}")
    return dict(value)


def _override(data: Mapping[str, Any] | Override) -> Override:
    if isinstance(data, Override):
        return data
    if not isinstance(data, Mapping):
        raise RuleSetError(f"an override must be a table with 'rules' and 'module' or 'type', not {data!r}")
    extra = sorted(set(data) - {"module", "type", "rules"})
    if extra or "rules" not in data or not ({"module", "type"} & set(data)):
        raise RuleSetError(
            "an override needs 'rules' and at least one of 'module' (path glob) or 'type' (class name)"
            + (f"; unknown keys: {', '.join(extra)}" if extra else "")
        )
    return Override(rules=dict(data["rules"]), module=data.get("module"), type=data.get("type"))


def _split(spec: RuleSpec, key: str) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping) and "rule" in spec:
        return str(spec["rule"]), {k: v for k, v in spec.items() if k != "rule"}
    raise RuleSetError(f"rule for '{key}' must be a name or a table with 'rule' = name, got {spec!r}")


def preset_names() -> list[str]:
    """Names of the presets shipped with lrpgraph."""
    folder = importlib.resources.files("lrpgraph.presets.tables")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset(name: str, **params: Any) -> RuleSet:
    """A shipped preset by name (or a preset file by path), with parameters overridden."""
    if not isinstance(name, str):
        raise RuleSetError(f"a preset is named by a string, not {type(name).__name__}")
    if name.endswith(".toml") or "/" in name:
        ruleset = RuleSet.from_file(name)
    else:
        resource = importlib.resources.files("lrpgraph.presets.tables") / f"{name}.toml"
        if not resource.is_file():
            close = difflib.get_close_matches(name, preset_names(), n=1)
            guess = f"did you mean '{close[0]}'? " if close else ""
            raise RuleSetError(f"unknown preset '{name}'; {guess}shipped presets: {', '.join(preset_names())}")
        ruleset = RuleSet.from_dict(tomllib.loads(resource.read_text()), name=name)
    return ruleset.with_params(**params) if params else ruleset


def resolve(rules: str | RuleSet | Mapping[str, Any]) -> RuleSet:
    """What `explain(rules=...)` accepts: a preset name or file, a RuleSet, or a dict in preset form."""
    if isinstance(rules, RuleSet):
        return rules
    if isinstance(rules, str):
        return preset(rules)
    if isinstance(rules, Mapping):  # a preset's tables, or just its [rules] table ({"linear": "epsilon"})
        return RuleSet.from_dict(rules if set(rules) & _SECTIONS or not rules else {"rules": rules})
    if isinstance(rules, os.PathLike):
        return preset(os.fspath(rules))
    raise RuleSetError(f"rules must be a preset name, a RuleSet or a dict, not {type(rules).__name__}")
