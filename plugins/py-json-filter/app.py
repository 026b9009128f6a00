"""`py-json-filter`: the `json-filter` stage, written in Python.

Keeps the JSON messages whose field satisfies a predicate and drops the rest:

    [stages.config]
    field = "amount"   # dotted path into the message's JSON value
    gte = 100          # exactly one of: equals, not_equals, in, exists, gt, gte, lt, lte, contains

A message whose value is not JSON, or whose field has the wrong type for an
ordering predicate (`gt` on a string), is `invalid` and goes to the dead-letter
sink. A missing field fails every predicate but `exists = false` and
`not_equals`. Build with `./build.sh OUT.wasm`.
"""

import json
import operator
from typing import Any, List, Optional

from componentize_py_types import Err, Ok, Result
from sluice_json import MISSING, FieldPath, Invalid, is_number, kind, parse_json
from wit_world import exports
from wit_world.imports.types import Message, StageError, StageError_Invalid

# The config keys, in the order the Rust stage lists them.
PREDICATES = ("equals", "not_equals", "in", "exists", "gt", "gte", "lt", "lte", "contains")
ORDERINGS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


class NotOnePredicate(Exception):
    """The config is well-formed but sets no predicate, or several."""


def json_eq(a: Any, b: Any) -> bool:
    """JSON equality as the Rust stage (serde_json) has it.

    Plain `==` is wrong here: Python has `True == 1` and `1 == 1.0`, while
    serde_json tells booleans from numbers, and an integer (`1`) from a
    float (`1.0`, `1e3`), so `equals = 1` does not match `1.0`.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(json_eq(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_eq(a[k], b[k]) for k in a)
    return a == b


class Filter:
    """A parsed, checked configuration."""

    def __init__(self, config: Any):
        if not isinstance(config, dict):
            raise ValueError(f"expected a table, got a {kind(config)}")
        unknown = [k for k in config if k != "field" and k not in PREDICATES]
        if unknown:
            expected = ", ".join(f"`{k}`" for k in ("field",) + PREDICATES)
            raise ValueError(f"unknown field `{unknown[0]}`, expected one of {expected}")
        if "field" not in config:
            raise ValueError("missing field `field`")
        self.field = FieldPath("field", config["field"])

        # Check each predicate's argument type, as the Rust stage's serde types do.
        for op in PREDICATES:
            if op not in config:
                continue
            arg = config[op]
            if op == "in" and not isinstance(arg, list):
                raise ValueError(f"`in` must be an array, got a {kind(arg)}")
            if op == "exists" and not isinstance(arg, bool):
                raise ValueError(f"`exists` must be a boolean, got a {kind(arg)}")
            if op in ORDERINGS and not is_number(arg):
                raise ValueError(f"`{op}` must be a number, got a {kind(arg)}")
            if op == "contains" and not isinstance(arg, str):
                raise ValueError(f"`contains` must be a string, got a {kind(arg)}")

        chosen = [op for op in PREDICATES if op in config]
        if not chosen:
            raise NotOnePredicate(
                f"no predicate for field `{self.field}`: set one of " + ", ".join(PREDICATES)
            )
        if len(chosen) > 1:
            raise NotOnePredicate(f"{len(chosen)} predicates for field `{self.field}`: set exactly one")
        self.op = chosen[0]
        self.arg = config[self.op]

    def keeps(self, doc: Any) -> bool:
        op, arg, v = self.op, self.arg, self.field.get(doc)
        if op == "exists":
            return (v is not MISSING) == arg
        if op == "not_equals":
            return v is MISSING or not json_eq(v, arg)
        if v is MISSING:
            return False
        if op == "equals":
            return json_eq(v, arg)
        if op == "in":
            return any(json_eq(v, x) for x in arg)
        if op in ORDERINGS:
            if not is_number(v):
                raise Invalid(f"field `{self.field}` is a {kind(v)}, but `{op}` needs a number")
            return ORDERINGS[op](v, arg)
        # contains: substring of a string, or equal to one of an array's strings.
        if isinstance(v, str):
            return arg in v
        if isinstance(v, list):
            return any(isinstance(item, str) and item == arg for item in v)
        raise Invalid(f"field `{self.field}` is a {kind(v)}, but `contains` needs a string or an array")


# The host calls `init` once per fresh instance, before any message. State
# lives at module level: it does not depend on how the bindings instantiate
# the `Stage` class.
_filter: Optional[Filter] = None


def outcome(message: Message) -> Result[List[Message], StageError]:
    if _filter is None:
        # The host always calls `init` first; reaching this is a host bug.
        raise RuntimeError("sluice called the stage before `init`")
    try:
        doc = parse_json(message.value)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return Err(StageError_Invalid(f"value is not the expected JSON: {e}"))
    try:
        return Ok([message] if _filter.keeps(doc) else [])
    except Invalid as e:
        return Err(StageError_Invalid(str(e)))


class Stage(exports.Stage):
    def init(self, config: str) -> None:
        # `result<_, string>` is mapped to "return None or raise Err(str)".
        global _filter
        # Same wording as the Rust stage: shape errors are "invalid config: ...",
        # the predicate count is reported as is.
        try:
            _filter = Filter(json.loads(config))
        except NotOnePredicate as e:
            raise Err(str(e))
        except ValueError as e:
            raise Err(f"invalid config: {e}")

    # `outcome` is a named type, so the bindings return it as a value
    # (Ok/Err) instead of raising.
    def process(self, message: Message) -> Result[List[Message], StageError]:
        return outcome(message)

    def process_batch(self, messages: List[Message]) -> List[Result[List[Message], StageError]]:
        return [outcome(m) for m in messages]
