"""Hyper-parameter schemas: a manifest may declare, next to ``hparams``, what each key accepts.

    hparams:
      q: 0.7
    hparam_schema:
      q: {type: float, gt: 0, max: 1, doc: "exponent of the Lq loss"}

A rule has a ``type`` (float, int, bool, str) and optionally ``min`` / ``max`` (inclusive bounds),
``gt`` / ``lt`` (exclusive bounds), ``choices`` (a list of allowed values), ``doc`` and ``before``: the
value that gives the behaviour of runs planned before the key existed (their specs lack it), so a
record of an older version can be planned again (``legacy_overrides``). The registry
checks the hparams against the schema when it reads the manifest, i.e. when a grid is planned, so a
malformed value fails in the first second rather than inside a worker after an hour. Every error is
one line naming the method, the key and what is allowed.
"""
from __future__ import annotations

import math

from .errors import UsageError, choices_hint

TYPES: dict[str, tuple[type, ...]] = {"float": (float, int), "int": (int,), "bool": (bool,), "str": (str,)}
RULE_FIELDS = ("type", "min", "max", "gt", "lt", "choices", "doc", "before")
_BOUNDS = {"min": ">=", "max": "<=", "gt": ">", "lt": "<"}


def allowed(key: str, rule: dict) -> str:
    """What ``key`` accepts, in words: 'float with 0 < q <= 1', 'one of additive, blocking'."""
    if "choices" in rule:
        return "one of " + ", ".join(str(c) for c in rule["choices"])
    if rule["type"] == "bool":
        return "true or false"
    lower = [f"{rule[b]} {'<' if b == 'gt' else '<='} " for b in ("gt", "min") if b in rule]
    upper = [f" {'<' if b == 'lt' else '<='} {rule[b]}" for b in ("lt", "max") if b in rule]
    if not lower and not upper:
        return f"any {rule['type']}"
    return f"{rule['type']} with {''.join(lower[:1])}{key}{''.join(upper[:1])}"


def check_schema(method: str, schema: object) -> dict:
    """The schema itself must be well formed: a mapping of key -> rule with known fields."""
    if not isinstance(schema, dict):
        raise UsageError(f"method '{method}': hparam_schema must be a mapping of key -> rule, got {type(schema).__name__}")
    for key, rule in schema.items():
        where = f"method '{method}': hparam_schema entry '{key}'"
        if not isinstance(rule, dict):
            raise UsageError(f"{where} must be a mapping with fields {', '.join(RULE_FIELDS)}")
        for field in rule:
            if field not in RULE_FIELDS:
                raise UsageError(f"{where} has unknown field '{field}'{choices_hint(str(field), RULE_FIELDS)}")
        if rule.get("type") not in TYPES:
            raise UsageError(f"{where} needs a type{choices_hint(str(rule.get('type')), TYPES)}")
        for bound in _BOUNDS:
            if bound in rule and not _is_number(rule[bound]):
                raise UsageError(f"{where}: '{bound}' must be a number, got {rule[bound]!r}")
        if "choices" in rule and not (isinstance(rule["choices"], list) and rule["choices"]):
            raise UsageError(f"{where}: 'choices' must be a non-empty list")
        if "before" in rule:
            try:
                _check_value(method, key, rule["before"], rule)
            except UsageError:
                raise UsageError(f"{where}: 'before' = {rule['before']!r} breaks its own rule; allowed: "
                                 f"{allowed(key, rule)}") from None
    return schema


def legacy_overrides(schema: dict, recorded: dict) -> dict:
    """The values that reproduce a spec whose hyper-parameters ``recorded`` predate some keys of ``schema``."""
    return {key: rule["before"] for key, rule in schema.items() if key not in recorded and "before" in rule}


def validate(method: str, hparams: dict, schema: object) -> None:
    """Raise ``UsageError`` unless every key of ``hparams`` is declared and within its rule."""
    schema = check_schema(method, schema)
    for key in hparams:
        if key not in schema:
            raise UsageError(f"method '{method}': unknown hyper-parameter '{key}'{choices_hint(str(key), schema)}")
    for key, rule in schema.items():
        if key not in hparams:
            raise UsageError(f"method '{method}': hyper-parameter '{key}' is missing from hparams; allowed: {allowed(key, rule)}")
        _check_value(method, key, hparams[key], rule)


def _check_value(method: str, key: str, value: object, rule: dict) -> None:
    where, ok = f"method '{method}': hyper-parameter '{key}'", allowed(key, rule)
    typ = rule["type"]
    # bool is an int in Python, but `true` is never a sensible count or rate.
    if not isinstance(value, TYPES[typ]) or (typ != "bool" and isinstance(value, bool)):
        raise UsageError(f"{where} must be {typ}, got {type(value).__name__} {value!r}; allowed: {ok}")
    if "choices" in rule and value not in rule["choices"]:
        raise UsageError(f"{where} = {value!r} is not allowed; allowed: {ok}")
    if typ in ("float", "int"):
        if not math.isfinite(value):
            raise UsageError(f"{where} = {value!r} is not finite; allowed: {ok}")
        inside = all((
            "min" not in rule or value >= rule["min"],
            "max" not in rule or value <= rule["max"],
            "gt" not in rule or value > rule["gt"],
            "lt" not in rule or value < rule["lt"],
        ))
        if not inside:
            raise UsageError(f"{where} = {value!r} is out of range; allowed: {ok}")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
