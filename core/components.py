"""What attacks, defenses and threat models share: a registry `name`, options declared as one
frozen dataclass, and the kinds of observation they apply to.

Options. A component class declares `options_class`, a frozen dataclass whose fields are its
options (defaults for all) and whose `__post_init__` checks their values (core.options.check_*).
`from_options(table, where)` builds it from a TOML table through `core.options.from_dict`: an
unknown key, a wrong type, NaN/inf or a bad value is one ConfigError naming the full key, before
the component exists. `describe()` is that table again, so `from_options(c.describe())` rebuilds
an equal component. A class written the plain way (a plugin with `__init__(self, keep=0.1, ...)`
and no `options_class`) gets its options dataclass derived from that signature: the same checks
of keys and annotated types, then its own `__init__` with the values.

Kinds. What one client's observation is; a defense applies to, and an attack runs on, a set of
them (`applies_to`), and a threat model shares one (`ThreatModel.kind`)."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Any, ClassVar, TypeVar

from fedleak.core.errors import ConfigError
from fedleak.core.options import OptionError, describe_options, from_dict, option_values

GRADIENT = "gradient"                        # FedSGD: the gradient of the client's mean loss
UPDATE = "update"                            # FedAvg: θ_K − θ_0 after local training
EMBEDDING = "embedding"                      # vertical FL: one party's messages (embeddings or codes)
HYPERNETWORK_UPDATE = "hypernetwork-update"  # HyperFL: Δφ of the hypernetwork, nothing of the model
KINDS = (GRADIENT, UPDATE, EMBEDDING, HYPERNETWORK_UPDATE)
C = TypeVar("C", bound="Component")


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a component that takes none."""


class Component:
    name: ClassVar[str] = ""
    section: ClassVar[str] = ""                    # its run-config table: "defense", "attack", "threat_model"
    options_class: ClassVar[type | None] = None    # None: derived from the keyword arguments of __init__

    def __init__(self, options: Any = None, **values: Any) -> None:
        """`options` (an instance of the options class) or the options as keywords, checked like
        a config table (`Prune(ratio=0.2)`)."""
        declared = self.options_type()
        if options is None:
            options = from_dict(declared, values, f"{self.section}.options")
        elif values or not isinstance(options, declared):
            raise TypeError(f"{type(self).__name__}: pass one {declared.__name__} or keyword options, not {options!r}")
        self.options = options

    @classmethod
    def options_type(cls) -> type:
        return cls.options_class if cls.options_class is not None else signature_options(typing.cast(Any, cls))

    @classmethod
    def declares_options(cls) -> bool:
        """False for a class written the plain way: keyword arguments, no options class."""
        return cls.options_class is not None or _init_of(cls) is Component.__init__

    @classmethod
    def from_options(cls: type[C], table: dict[str, Any], where: str, *args: Any) -> C:
        """The component configured by `table` (errors name `where.<key>`); `args` go first to
        the constructor (a threat model's local training)."""
        options: Any = from_dict(cls.options_type(), table, where)
        try:
            if cls.declares_options():
                made: C = typing.cast(Any, cls)(*args, options)  # a threat model takes its training first
                return made
            instance = cls(*args, **option_values(options))
        except OptionError as e:
            raise e.under(where) from None
        if getattr(instance, "options", None) is None or isinstance(instance.options, cls.options_type()):
            instance.options = options  # the values it was built with, for describe() and equality
        return instance

    def describe(self) -> dict[str, Any]:
        """The options as a config table (recorded with every result row); rebuilds this component."""
        options = getattr(self, "options", None)
        return describe_options(options) if dataclasses.is_dataclass(options) else {}


def applicability(component: Any, kind: str) -> str | None:
    """None when `component` (a defense or attack, class or instance) applies to observations of
    `kind`; otherwise the one-line reason it does not."""
    applies = tuple(getattr(component, "applies_to", ()))
    if kind in applies:
        return None
    verb = "runs on" if getattr(component, "section", "") == "attack" else "applies to"
    return f"{component.section} '{component.name}' {verb} {', '.join(applies) or 'nothing'}, not {kind}"


def _init_of(cls: type) -> Any:
    return next(c.__dict__["__init__"] for c in cls.__mro__ if "__init__" in c.__dict__)


@functools.cache
def signature_options(cls: type) -> type:
    """A frozen dataclass of the keyword arguments of `cls.__init__`, typed by their annotations
    (an unannotated one takes any value: the class checks it), for classes without options_class."""
    init = _init_of(cls)
    if init is Component.__init__ or init is object.__init__:
        return NoOptions
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: leave the value to the class
        hints = {}
    fields = []
    for parameter in list(inspect.signature(init).parameters.values())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is inspect.Parameter.empty:
            raise ConfigError(f"{cls.__module__}.{cls.__qualname__}: __init__ needs '{parameter.name}'; "
                              "give every option a default")
        default = parameter.default
        def fresh(d: Any = default) -> Any:  # a new list/dict/set per instance, as a default_factory
            return type(d)(d)
        spec = dataclasses.field(default_factory=fresh) if isinstance(default, (list, dict, set)) \
            else dataclasses.field(default=default)
        fields.append((parameter.name, hints.get(parameter.name, typing.Any), spec))
    return dataclasses.make_dataclass(f"{cls.__name__}Options", fields, frozen=True)
