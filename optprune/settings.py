"""Settings declared once.  A spec is a frozen dataclass of `setting` fields: each field states its type
(the annotation), default, help, check and command-line flag in one place, and everything else is derived
from it: the CLI's argparse group (`add_arguments`, `from_args`), the type and range checks at construction
(`Spec.__post_init__`), the run's fingerprint and the report's settings (`described`) and the
Python API's keywords (the dataclass fields themselves).  Adding a setting is one field plus the code that
uses it."""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, Field, field, fields

AUTO = object()          # flag=AUTO: --name-with-dashes


def setting(default, help: str, *, check=None, flag=AUTO, repeat: bool = False, parse=None,
            fingerprint=True, applies=None, metavar: str | None = None) -> Field:
    """A spec field.  check(value) -> None, or what is wrong ("must be >= 1"), or raises ValueError itself;
    flag: the CLI flag (None: not on the command line); repeat: the flag may be given many times (a list);
    parse(CLI value) -> the field's value; fingerprint: True (the value), False (not part of the result: paths,
    placement) or f(spec) -> the resolved value; applies(spec) -> whether the setting matters in this run
    (it enters fingerprint and report only then)."""
    meta = dict(help=help, check=check, flag=flag, repeat=repeat, parse=parse, fingerprint=fingerprint,
                applies=applies, metavar=metavar)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class Spec:
    """Base of the setting specs: fields are typed and checked on construction, then every class's own
    `relations(self)` (checks across fields) runs, base classes first."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in settings_of(type(self)):
            value = coerced(f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
            problem = f.metadata["check"](value) if f.metadata["check"] else None
            if problem:
                raise ValueError(f"{f.name} {problem}, got {value!r}")
        for cls in reversed(type(self).__mro__):
            if "relations" in cls.__dict__:
                cls.__dict__["relations"](self)


def settings_of(cls) -> list[Field]:
    """The `setting` fields of a spec class (its bases' included), in declaration order."""
    return [f for f in fields(cls) if "help" in f.metadata]


def coerced(name: str, value, hint):
    """`value` as the field's type `hint`: an int where a float is wanted, a list where a tuple is; anything
    else of the wrong type is refused with one line naming the setting."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    for kind in options:
        kind = typing.get_origin(kind) or kind
        if kind is type(None) and value is None:
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is tuple and isinstance(value, list):
            return tuple(value)
        if kind is not type(None) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    names = " or ".join("None" if k is type(None) else getattr(k, "__name__", str(k)) for k in options)
    raise ValueError(f"{name} must be {names}, got {value!r} ({type(value).__name__})")


def default_of(f: Field):
    return f.default_factory() if f.default is MISSING else f.default


def flag_of(f: Field) -> str | None:
    flag = f.metadata["flag"]
    return "--" + f.name.replace("_", "-") if flag is AUTO else flag


def described(spec, result_only: bool = False) -> dict:
    """Every setting that matters in this run, as the report states it (resolved where the field says how,
    e.g. dtype 'auto' -> the dtype used); `result_only`: only those that change the result (the fingerprint)."""
    out = {}
    for f in settings_of(type(spec)):
        how = f.metadata["fingerprint"]
        if (result_only and how is False) or not applies(spec, f):
            continue
        out[f.name] = how(spec) if callable(how) else plain(getattr(spec, f.name))
    return out


def prefixed(spec, prefix: str) -> dict:
    """{name without `prefix`: value} of the spec's settings named prefix...: the options of one part of the run
    (reconstruct_epochs, reconstruct_lr -> a BlockReconstruction's epochs, lr)."""
    return {f.name.removeprefix(prefix): getattr(spec, f.name) for f in settings_of(type(spec))
            if f.name.startswith(prefix)}


def applies(spec, f: Field) -> bool:
    return f.metadata["applies"] is None or bool(f.metadata["applies"](spec))


def plain(value):
    """A JSON-ready copy: tuples as lists, dicts copied."""
    if isinstance(value, tuple):
        return list(value)
    return dict(value) if isinstance(value, dict) else value


def add_arguments(parser: argparse.ArgumentParser, spec_cls, only: tuple[str, ...] | None = None,
                  defaults: dict | None = None) -> None:
    """The spec's flags as one argparse group titled by its docstring's first line (`only`: these fields;
    `defaults`: a command's own defaults where it means something else by an empty value)."""
    doc = (spec_cls.__doc__ or spec_cls.__name__).strip().splitlines()[0]
    group = parser.add_argument_group(spec_cls.__name__.removesuffix("Spec").lower(), doc)
    hints = typing.get_type_hints(spec_cls)
    for f in settings_of(spec_cls):
        flag = flag_of(f)
        if flag is None or (only is not None and f.name not in only):
            continue
        default = (defaults or {}).get(f.name, default_of(f))
        text = f.metadata["help"] + (f" (default: {default})" if default not in (None, "", (), {}, False) else "")
        kwargs = dict(dest=f.name, help=text.replace("%", "%%"))       # plain text: argparse formats a % sign
        if f.metadata["metavar"]:
            kwargs["metavar"] = f.metadata["metavar"]
        if f.metadata["repeat"]:
            kwargs.update(action="append", default=[])
        elif hints[f.name] is bool:
            kwargs.update(action="store_true", default=default)
        else:
            kwargs.update(type=cli_type(hints[f.name]), default=default)
        group.add_argument(flag, **kwargs)


def cli_type(hint):
    """The argparse type of a field's hint: float | None -> float, str -> str."""
    kinds = [k for k in (typing.get_args(hint) or (hint,)) if k is not type(None)]
    return kinds[0] if kinds and kinds[0] in (int, float, str) else str


def from_args(spec_cls, args: argparse.Namespace, **fixed):
    """spec_cls built from the parsed flags it declares (those the command has), then `fixed`."""
    values = {}
    for f in settings_of(spec_cls):
        if flag_of(f) is None or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        values[f.name] = f.metadata["parse"](value) if f.metadata["parse"] else value
    return spec_cls(**{**values, **fixed})
