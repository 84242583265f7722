"""Settings from a URL query, ``transport_options`` or a keyword, checked on entry.

Every transport declares its options as a table of :class:`Option` and
reads them through :func:`read_options`, so a wrong value meets the same
rule everywhere: a :class:`~kombu_green.exceptions.ConfigurationError` that
names the option and the value given, in this library's own words, raised
before anything touches the network. A client library's wording, which
changes between its releases, never decides what the user is told.

URL query values arrive as text already turned into numbers and flags where
they spell one (:func:`kombu_green.url.coerce_option`); the checks below
accept both that and the Python values a program passes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Type

from .exceptions import ConfigurationError

__all__ = ["Option", "check_one", "choice", "describe_value", "flag", "mapping", "number", "optional",
           "read_options", "text", "whole", "whole_list"]

#: Checks turn a given value into the value used, or raise ValueError whose
#: text says what the value must be ("a number of seconds above 0").
Check = Callable[[Any], Any]

#: Option names whose values are never shown (passwords, tokens, keys).
_SECRET = re.compile(r"pass|secret|token|credential|authmechanismproperties", re.IGNORECASE)


@dataclass(frozen=True)
class Option:
    """One setting: its check, its default, and one line for the docs."""

    check: Check
    default: Any = None
    doc: str = ""


def describe_value(name: str, value: Any) -> str:
    """``name=value`` as an error message shows it (secrets masked)."""
    shown = "'**'" if _SECRET.search(name) and value not in (None, "") else repr(value)
    return f"{name}={shown}"


def read_options(label: str, given: Mapping[str, Any], table: Mapping[str, Option],
                 where: str = "") -> Dict[str, Any]:
    """Check the options of ``table`` found in ``given``; fill in the defaults.

    Returns every option of ``table`` (its checked value, or its default)
    plus the entries of ``given`` that ``table`` does not name, unchanged:
    kombu ignores options meant for another transport, and so do we, since
    one ``transport_options`` dict is often shared by several transports.
    ``label`` begins the error message, e.g. ``"Redis transport option"``;
    ``where`` (a URL without its password) follows the option when given.
    """
    checked: Dict[str, Any] = {key: value for key, value in given.items() if key not in table}
    for name, option in table.items():
        if name not in given or given[name] is None:
            checked[name] = option.default
            continue
        checked[name] = check_one(label, name, given[name], option.check, where)
    return checked


def check_one(label: str, name: str, value: Any, check: Check, where: str = "",
              error: Type[ConfigurationError] = ConfigurationError) -> Any:
    """Apply one check; a failure becomes ``error`` naming ``name`` and ``value``."""
    try:
        return check(value)
    except (TypeError, ValueError, OverflowError) as exc:
        place = f" for {where}" if where else ""
        raise error(f"{label} {describe_value(name, value)}{place} is not valid: it must be {exc}.") from None


# -- checks -----------------------------------------------------------------------


def _real(value: Any) -> float:
    if isinstance(value, bool):  # True is an int, but never the number a user meant
        raise ValueError(value)
    return float(value)


def number(above: Optional[float] = 0.0, at_least: Optional[float] = None, unit: str = "seconds") -> Check:
    """A number (int, float or its text) ``> above`` or ``>= at_least``."""
    if at_least is not None:
        want = f"a number of {unit}, {at_least:g} or more"
    else:
        want = f"a number of {unit} above {above:g}" if above is not None else f"a number of {unit}"

    def check(value: Any) -> float:
        try:
            result = _real(value)
        except (TypeError, ValueError):
            raise ValueError(want) from None
        if result != result or (at_least is not None and result < at_least) \
                or (at_least is None and above is not None and result <= above):
            raise ValueError(want)
        return result
    return check


def whole(low: int = 0, high: Optional[int] = None, unit: str = "") -> Check:
    """A whole number from ``low`` to ``high`` (an int, a float such as 3.0, or text)."""
    span = f"from {low} to {high}" if high is not None else f"{low} or more"
    want = f"a whole number{' of ' + unit if unit else ''} {span}"

    def check(value: Any) -> int:
        try:
            result = _real(value)
            if result != int(result):
                raise ValueError(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(want) from None
        if result < low or (high is not None and result > high):
            raise ValueError(want)
        return int(result)
    return check


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def flag(value: Any) -> bool:
    """True or False: a bool, 0/1, or yes/no, true/false, on/off as text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("true or false (also 1/0, yes/no, on/off)")


def text(value: Any) -> str:
    """Any text (a number given in a URL query is taken as its text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("text")
    return str(value)


def mapping(value: Any) -> Dict[str, Any]:
    """A dict (these options cannot be spelled in a URL)."""
    if not isinstance(value, Mapping):
        raise ValueError("a dict, given in transport_options (a URL query cannot spell it)")
    return dict(value)


def choice(*allowed: str) -> Check:
    """One of ``allowed`` (case-insensitive); returns the lower-case spelling."""
    want = "one of " + ", ".join(repr(item) for item in allowed)

    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in allowed:
            raise ValueError(want)
        return value.lower()
    return check


def optional(check: Check, none_words: Sequence[str] = ("none", "")) -> Check:
    """``check``, or None when the value is None or spells it (``?x=none``)."""
    def checked(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in none_words):
            return None
        return check(value)
    return checked


def whole_list(low: int, high: int) -> Check:
    """Whole numbers from ``low`` to ``high``, as a list or ``"0,3,6,9"`` text; sorted, unique."""
    item = whole(low, high)
    want = f"whole numbers from {low} to {high}, as a list or comma-separated text such as '0,3,6,9'"

    def check(value: Any) -> List[int]:
        if isinstance(value, str):
            parts: Sequence[Any] = [part for part in value.split(",") if part.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            parts = [value]
        elif isinstance(value, (list, tuple)):
            parts = value
        else:
            raise ValueError(want)
        try:
            result = sorted({item(part.strip() if isinstance(part, str) else part) for part in parts})
        except ValueError:
            raise ValueError(want) from None
        if not result:
            raise ValueError(want)
        return result
    return check
