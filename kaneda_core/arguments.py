"""Checking a backend's constructor arguments, so that a mistake fails at construction.

A missing argument, an unknown one or one of the wrong type raises a
:class:`ConfigurationError` that names the parameter, says what it got and shows what
works, instead of a ``TypeError`` here or a failure at every delivery later.
"""

from __future__ import annotations

import functools
import inspect
import os
import types
from collections.abc import Callable, Mapping
from difflib import get_close_matches
from typing import Any, NamedTuple, TypeVar, Union, get_args, get_origin

from .errors import ConfigurationError
from .redact import MASK, is_secret_name, redact_url

T = TypeVar("T")

_SCALARS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


class _Accepted(NamedTuple):
    """The plain types a parameter's annotation allows (None when it cannot be told)."""

    types: tuple[type, ...]
    list_of: type | None  # list[str] -> str
    optional: bool


def check_arguments(cls: type, arguments: Mapping[str, Any]) -> None:
    """Refuse arguments that do not fit the annotations of ``cls.__init__``.

    Call it first thing in a constructor: ``check_arguments(InfluxBackend, locals())``.
    Parameters annotated with plain types (``str``, ``int``, ``float``, ``bool``,
    ``list[str]``, ``os.PathLike[str]``, ``None`` and unions of them) are checked;
    others (a client class, ``Any``) are left to the constructor. ``int`` refuses
    ``True``; ``float`` takes an int. A ``port`` must be from 1 to 65535 and a
    ``timeout`` above zero and finite (below ``MAX_TIMEOUT``).
    """
    for name, accepted in _accepted_types(cls.__init__).items():  # type: ignore[misc]
        if name not in arguments:
            continue
        value = arguments[name]
        if not _fits(value, accepted):
            raise ConfigurationError(
                f"{cls.__name__}: {name} must be {_describe(accepted)}, got {_show(name, value)} "
                f"({type(value).__name__}).{_example(cls, name)}"
            )
        if value is None or isinstance(value, bool):
            continue
        if name == "port" and not 1 <= value <= 65535:
            raise ConfigurationError(
                f"{cls.__name__}: port must be from 1 to 65535, got {value!r}.{_example(cls, name)}"
            )
        if name == "timeout" and not 0 < value < MAX_TIMEOUT:
            raise ConfigurationError(
                f"{cls.__name__}: timeout must be above zero (and finite), got {value!r}."
                f"{_example(cls, name)}"
            )


#: The largest timeout a backend takes: a wait this long is a mistake (an infinite
#: one cannot even be passed to a lock or a socket).
MAX_TIMEOUT = 1e9


def argument_error(cls: type, name: str, expected: str, value: object) -> ConfigurationError:
    """The error for argument ``name`` of ``cls`` given ``value``: what it must be, an example.

    ``raise argument_error(RQBackend, "redis_url", "a redis:// URL", redis_url)`` reads
    ``RQBackend: redis_url must be a redis:// URL, got 'localhost' (str). For example: ...``
    (a password is never shown).
    """
    return ConfigurationError(
        f"{cls.__name__}: {name} must be {expected}, got {_show(name, value)} "
        f"({type(value).__name__}).{_example(cls, name)}"
    )


def parameters_of(cls: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    """The parameters ``cls(...)`` takes, by name.

    A backend class that defines no ``__init__`` takes none, although the signature
    Python reports for it is ``Backend.__new__``'s ``(*args, **kwargs)``: the arguments
    would be accepted there and then silently ignored by ``object.__init__``.
    """
    if isinstance(cls, type) and getattr(cls, "__init__", None) is object.__init__:
        return {}
    return inspect.signature(cls).parameters


def construct(
    cls: Callable[..., T],
    options: Mapping[str, Any],
    name: str | None = None,
    *,
    url: str | None = None,
) -> T:
    """``cls(**options)``, with a :class:`ConfigurationError` that advises when they do not bind.

    ``name`` is the backend's registered name, used in the advice; ``url`` the URL the
    options were read from, when they were (the advice then says how to add a missing
    one to it). Options named after positional-only parameters are passed by position.
    """
    try:
        parameters = parameters_of(cls)
    except (TypeError, ValueError):  # no signature to read: let the call speak
        return cls(**options)
    args, kwargs = _by_position(parameters, options)
    try:
        inspect.Signature(list(parameters.values())).bind(*args, **kwargs)
    except TypeError:
        raise ConfigurationError(_binding_advice(cls, parameters, options, name, url)) from None
    return cls(*args, **kwargs)


def _by_position(
    parameters: Mapping[str, inspect.Parameter], options: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """``options`` split into the positional-only arguments, in order, and the rest."""
    kwargs = dict(options)
    positional = [p for p in parameters.values() if p.kind is p.POSITIONAL_ONLY]
    given = [i for i, p in enumerate(positional) if p.name in kwargs]
    args: list[Any] = []
    for parameter in positional[: given[-1] + 1] if given else []:
        if parameter.name in kwargs:
            args.append(kwargs.pop(parameter.name))
        elif parameter.default is not parameter.empty:
            args.append(parameter.default)  # to reach a later one given by name
        else:
            break  # left for the binding to refuse, with advice
    return args, kwargs


def _binding_advice(
    cls: Callable[..., Any],
    parameters: Mapping[str, inspect.Parameter],
    options: Mapping[str, Any],
    name: str | None,
    url: str | None = None,
) -> str:
    title = getattr(cls, "__name__", repr(cls))
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    taken = [p for p in parameters if not p.startswith("_")]
    unknown = [] if accepts_any else [key for key in options if key not in parameters]
    if unknown:
        key = unknown[0]
        close = get_close_matches(key, taken, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{title} takes no argument {key!r}.{hint} It takes: {', '.join(taken) or 'none'}."
    missing = [
        p.name
        for p in parameters.values()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in options
    ]
    label = f"The {name!r} backend ({title})" if name else title
    needs = ", ".join(missing) or "other arguments"
    them = "it" if len(missing) == 1 else "them"
    if url is not None:
        shown = redact_url(url)
        query = "&".join(f"{p}=..." for p in missing)
        joined = f"{shown}{'&' if '?' in shown else '?'}{query}"
        return f"{label} needs {needs}: add {them} to the URL's query, as in {joined}."
    call = ", ".join(f"{p}=..." for p in missing)
    how = f"create_backend({name!r}, {call})" if name else f"{title}({call})"
    example = getattr(cls, "example_url", None)
    example_url = f", or a URL: {example}" if example else ""
    return f"{label} needs {needs}: pass {them}, {how}{example_url}."


def accepted_types(cls: type, name: str) -> tuple[type, ...]:
    """The plain types ``cls.__init__`` declares for parameter ``name`` (empty if none).

    A subclass whose ``__init__`` passes ``*args, **kwargs`` on (kaneda 1.0's faces)
    declares what the first ``__init__`` up its bases that names ``name`` declares.
    """
    for klass in getattr(cls, "__mro__", (cls,)):
        init = vars(klass).get("__init__")
        if init is None:
            continue
        accepted = _accepted_types(init).get(name)
        if accepted is not None:
            return accepted.types
        if name in inspect.signature(init).parameters:
            return ()
    return ()


@functools.cache
def _accepted_types(init: Callable[..., Any]) -> dict[str, _Accepted]:
    accepted = {}
    for name, parameter in inspect.signature(init).parameters.items():
        found = _read_annotation(parameter.annotation)
        if found is not None:
            accepted[name] = found
    return accepted


def _read_annotation(annotation: object) -> _Accepted | None:
    """The plain types ``annotation`` allows, from its text or its typing objects."""
    if isinstance(annotation, str):
        members: list[object] = [part.strip() for part in annotation.split("|")]
    elif get_origin(annotation) in (Union, types.UnionType):
        members = list(get_args(annotation))
    else:
        members = [annotation]
    kinds: list[type] = []
    list_of = None
    optional = False
    for member in members:
        if member in ("None", None, type(None)):
            optional = True
        elif isinstance(member, str) and member in _SCALARS:
            kinds.append(_SCALARS[member])
        elif member in _SCALARS.values():
            kinds.append(member)  # type: ignore[arg-type]
        elif member in ("list[str]", list[str]):
            list_of = str
        elif member in ("os.PathLike[str]", "PathLike[str]", os.PathLike[str]):
            kinds.append(os.PathLike)
        else:
            return None  # a class, Any, a generic: not ours to check
    if not kinds and list_of is None:
        return None
    return _Accepted(tuple(kinds), list_of, optional)


def _fits(value: object, accepted: _Accepted) -> bool:
    if value is None:
        return accepted.optional
    if accepted.list_of is not None and isinstance(value, (list, tuple)):  # 1.0 took tuples
        return all(isinstance(item, accepted.list_of) for item in value)
    if isinstance(value, bool):
        return bool in accepted.types
    if isinstance(value, int) and float in accepted.types:
        return True
    return isinstance(value, accepted.types)


def _describe(accepted: _Accepted) -> str:
    names = {
        str: "a string",
        int: "an int",
        float: "a number",
        bool: "True or False",
        os.PathLike: "a path",
    }
    words = [names[kind] for kind in accepted.types]
    if accepted.list_of is not None:
        words.append("a list of strings")
    if accepted.optional:
        words.append("None")
    return " or ".join(words)


def _show(name: str, value: object) -> str:
    if is_secret_name(name):
        return MASK
    return _shown(value)


def _shown(value: object) -> str:
    """``value`` as an error shows it: a URL's password masked wherever one may be (a
    list's items, bytes, or the repr of anything else)."""
    if isinstance(value, str):
        return repr(redact_url(value))
    if isinstance(value, (list, tuple)):
        items = ", ".join(_shown(item) for item in value)
        if isinstance(value, list):
            return f"[{items}]"
        return f"({items},)" if len(value) == 1 else f"({items})"
    if isinstance(value, bytes):
        return repr(redact_url(value.decode("latin-1")).encode("latin-1"))
    return redact_url(repr(value))


def _example(cls: type, name: str) -> str:
    example = getattr(cls, "example_url", None)
    default = inspect.signature(cls).parameters.get(name)
    hints = []
    if default is not None and default.default not in (inspect.Parameter.empty, None, ""):
        hints.append(f"{name}={default.default!r}")
    elif example and name in ("host", "port"):
        from urllib.parse import urlsplit

        try:
            from_example = getattr(urlsplit(example), "hostname" if name == "host" else "port")
        except ValueError:
            from_example = None
        if from_example:
            hints.append(f"{name}={from_example!r}")
    if example:
        hints.append(f"a URL such as {example}")
    return f" For example: {', or '.join(hints)}." if hints else ""
