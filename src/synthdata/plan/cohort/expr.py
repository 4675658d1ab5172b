"""A tiny expression language for selecting table rows: parsed by a grammar, never `eval`.

    Effusion == 1 and Pneumonia != 1
    "Effusion" in Finding_Labels                  # multi-label text column: items split on '|'
    `View Position` in ["PA", "AP"] and `Patient Age` >= 18
    not (Cardiomegaly == 1 or is_missing(Edema))

Operands: column names (bare identifiers, matched exactly or with spaces and punctuation read as
`_`, or quoted in backticks), strings in double or single quotes, numbers, lists `[...]`, `true`,
`false`. Operators: `== != < <= > >=`, `in`, `not in`, `and`, `or`, `not`, parentheses, and
`is_missing(column)`. `x in Column` tests membership in a multi-label text column; `Column in
[...]` tests the cell against a list.

A missing (blank) cell equals nothing: every comparison with it is false except `!=`, which is
true; `is_missing` tests for it. Cells compare as numbers when the other side is a number and as
exact text otherwise.

Why a grammar (lark, LALR) rather than `eval`, `pandas.eval`/`query` or an AST sandbox:
`pandas.query` documents that it is not safe for untrusted input (it evaluates Python and
can reach attributes), sandboxes around Python's evaluator have a history of escapes, and
neither gives the column/position errors wanted here. The grammar accepts only what is listed
above, so nothing but comparisons can run, and a parsed expression evaluates column-wise over
the whole table (vectorised) instead of row by row.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MAX_CHARS = 2000

GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr
        | or_expr "or" and_expr            -> or_
?and_expr: not_expr
         | and_expr "and" not_expr         -> and_
?not_expr: "not" not_expr                  -> not_
         | test
?test: operand COMP operand                -> compare
     | operand "in" operand                -> contains
     | operand "not" "in" operand          -> not_contains
     | "(" or_expr ")"
     | "true"                              -> true
     | "false"                             -> false
     | "is_missing" "(" column ")"         -> is_missing
?operand: column | STRING -> string | NUMBER -> number | list
column: NAME | QUOTED
list: "[" [operand ("," operand)*] "]"
COMP: "==" | "!=" | "<=" | ">=" | "<" | ">"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
QUOTED: /`[^`]+`/
STRING: /"[^"]*"/ | /'[^']*'/
NUMBER: /-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?/
%ignore /\s+/
"""


class ExprError(ValueError):
    """An expression that cannot be parsed or evaluated; `position` is a 1-based character."""

    def __init__(self, message: str, position: int | None = None):
        self.position = position
        super().__init__(message if position is None else f"at character {position}: {message}")


@dataclass(frozen=True)
class Col:
    """A reference to a table column, as written (`text`) and resolved (`name`)."""

    text: str
    position: int
    name: str | None = None


@dataclass(frozen=True)
class Lit:
    """A string or number literal."""

    value: str | float


@dataclass(frozen=True)
class ListLit:
    """A list of literals."""

    items: tuple[Lit, ...]


@dataclass(frozen=True)
class Node:
    """An operator applied to operands: or_, and_, not_, compare, contains, not_contains,
    is_missing, true, false."""

    op: str
    args: tuple
    detail: str = ""


@lru_cache(maxsize=1)
def _parser():
    from lark import Lark

    return Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _convert(tree) -> Node | Col | Lit | ListLit:
    from lark import Token, Tree

    if isinstance(tree, Token):
        if tree.type == "STRING":
            return Lit(tree[1:-1])
        if tree.type == "NUMBER":
            return Lit(float(tree))
        raise ExprError(f"unexpected {tree!r}", tree.start_pos + 1)
    assert isinstance(tree, Tree)
    kind = tree.data
    if kind == "column":
        tok = tree.children[0]
        text = tok[1:-1] if tok.type == "QUOTED" else str(tok)
        return Col(text, tok.start_pos + 1)
    if kind == "string":
        return Lit(tree.children[0][1:-1])
    if kind == "number":
        return Lit(float(tree.children[0]))
    if kind == "list":
        items = tuple(_convert(c) for c in tree.children)
        bad = [i for i in items if not isinstance(i, Lit)]
        if bad:
            raise ExprError("lists hold only strings and numbers")
        return ListLit(items)
    if kind == "compare":
        left, op, right = tree.children
        return Node("compare", (_convert(left), _convert(right)), str(op))
    return Node(str(kind), tuple(_convert(c) for c in tree.children))


_EARLY_END = ("the expression ends too early: an operand, a comparison or ')' is missing "
              "(a condition compares a column: Effusion == 1, \"A\" in Labels)")


def parse(text: str) -> Node:
    """Parse an expression into a tree of Node/Col/Lit; raise ExprError with the position."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

    if not text.strip():
        raise ExprError("empty expression")
    if len(text) > MAX_CHARS:
        raise ExprError(f"expression is longer than {MAX_CHARS} characters")
    try:
        tree = _parser().parse(text)
    except UnexpectedEOF:
        raise ExprError(_EARLY_END, len(text) + 1) from None
    except UnexpectedToken as exc:
        if exc.token.type == "$END":
            raise ExprError(_EARLY_END, len(text) + 1) from None
        raise ExprError(f"unexpected {str(exc.token)!r}", exc.column) from None
    except UnexpectedCharacters as exc:
        char = text[exc.pos_in_stream]
        hint = " (compare with ==)" if char == "=" else ""
        raise ExprError(f"unexpected character {char!r}{hint}", exc.column) from None
    except UnexpectedInput as exc:
        raise ExprError("cannot parse the expression", getattr(exc, "column", None)) from None
    node = _convert(tree)
    if not isinstance(node, Node):
        raise ExprError("expected a condition (a comparison, `in`, `is_missing(...)`, true or false), "
                        "not a bare value")
    return node


def _normal(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower()


def resolve_column(text: str, columns: list[str]) -> str:
    """The table column a name refers to: exact, else unique match ignoring case and punctuation."""
    if text in columns:
        return text
    matches = [c for c in columns if _normal(c) == _normal(text)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"column {text!r} is ambiguous ({', '.join(map(repr, matches))}); "
                         "write the exact name in backticks")
    close = difflib.get_close_matches(text, columns, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"no column {text!r} in the table{hint} (columns: {', '.join(columns)})")


def columns_of(node) -> list[Col]:
    """Every column reference in a parsed expression, in order."""
    if isinstance(node, Col):
        return [node]
    if isinstance(node, Node):
        return [c for a in node.args for c in columns_of(a)]
    return []


def bind(node, columns: list[str]):
    """The tree with every column resolved against the table's columns (ExprError if unknown)."""
    if isinstance(node, Col):
        try:
            return Col(node.text, node.position, resolve_column(node.text, columns))
        except ValueError as exc:
            raise ExprError(str(exc), node.position) from None
    if isinstance(node, Node):
        return Node(node.op, tuple(bind(a, columns) for a in node.args), node.detail)
    return node


class Frame:
    """Column access for evaluation: text cells with a missing mask, numbers parsed on demand."""

    def __init__(self, cells: Mapping[str, np.ndarray], missing: Mapping[str, np.ndarray],
                 separator: str = "|", table_name: str = "table"):
        self.cells, self.missing, self.separator, self.table_name = cells, missing, separator, table_name
        self._numbers: dict[str, np.ndarray] = {}
        self._items: dict[str, list[frozenset]] = {}
        self.n = len(next(iter(cells.values()))) if cells else 0

    def numbers(self, column: str) -> np.ndarray:
        """The column as float64 (NaN where missing); ExprError naming the first bad row."""
        if column not in self._numbers:
            cells, miss = self.cells[column], self.missing[column]
            out = np.full(len(cells), np.nan)
            for i in np.nonzero(~miss)[0]:
                try:
                    out[i] = float(cells[i])
                except ValueError:
                    raise ExprError(f"{self.table_name}: column {column!r}, row {i}: {cells[i]!r} is "
                                    "not a number, but the expression compares the column with a "
                                    "number") from None
            self._numbers[column] = out
        return self._numbers[column]

    def items(self, column: str) -> list[frozenset]:
        """Each cell split on the separator into a set of stripped items (empty when missing)."""
        if column not in self._items:
            sep = self.separator
            self._items[column] = [frozenset() if m else frozenset(p.strip() for p in str(c).split(sep))
                                   for c, m in zip(self.cells[column], self.missing[column])]
        return self._items[column]


def _fmt(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _side(frame: Frame, operand, numeric: bool) -> tuple[np.ndarray, np.ndarray]:
    """(values, missing) of an operand as numbers or text, broadcast to the table."""
    n = frame.n
    if isinstance(operand, Col):
        if numeric:
            values = frame.numbers(operand.name)
            return values, np.isnan(values)
        return frame.cells[operand.name].astype(object), frame.missing[operand.name]
    if isinstance(operand, Lit):
        value = operand.value if numeric else _fmt(operand.value)
        if numeric and isinstance(value, str):
            raise ExprError(f"cannot compare text {value!r} with a number")
        return np.full(n, value, dtype=float if numeric else object), np.zeros(n, dtype=bool)
    raise ExprError("lists can only follow `in`")


_OPS = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
        ">": np.greater, ">=": np.greater_equal}


def _compare(frame: Frame, node: Node) -> np.ndarray:
    left, right = node.args
    numeric = any(isinstance(s, Lit) and isinstance(s.value, float) for s in (left, right))
    if node.detail in ("<", "<=", ">", ">=") and not numeric:
        if not (isinstance(left, Col) and isinstance(right, Col)):
            raise ExprError(f"`{node.detail}` compares numbers; got text")
        numeric = True
    lv, lm = _side(frame, left, numeric)
    rv, rm = _side(frame, right, numeric)
    either = lm | rm
    with np.errstate(invalid="ignore"):
        result = np.asarray(_OPS[node.detail](np.where(either, 0 if numeric else "", lv),
                                              np.where(either, 0 if numeric else "", rv)), dtype=bool)
    return np.where(either, node.detail == "!=", result)


def _contains(frame: Frame, node: Node) -> np.ndarray:
    item, container = node.args
    if isinstance(container, ListLit):
        if isinstance(item, Col):
            if all(isinstance(i.value, float) for i in container.items) and container.items:
                values = frame.numbers(item.name)
                return np.isin(values, [i.value for i in container.items]) & ~np.isnan(values)
            wanted = {_fmt(i.value) for i in container.items}
            cells = frame.cells[item.name]
            return np.array([(not m) and str(c) in wanted
                             for c, m in zip(cells, frame.missing[item.name])], dtype=bool)
        if isinstance(item, Lit):
            return np.full(frame.n, _fmt(item.value) in {_fmt(i.value) for i in container.items})
    if isinstance(container, Col) and isinstance(item, Lit):
        wanted = _fmt(item.value)
        return np.array([wanted in s for s in frame.items(container.name)], dtype=bool)
    raise ExprError("`in` needs a value before a multi-label column (\"Effusion\" in Finding_Labels) "
                    "or a column before a list (View in [\"PA\", \"AP\"])")


def evaluate(node, frame: Frame) -> np.ndarray:
    """A bound expression over every row of the frame: a boolean array."""
    op = node.op
    if op == "or_":
        return np.logical_or.reduce([evaluate(a, frame) for a in node.args])
    if op == "and_":
        return np.logical_and.reduce([evaluate(a, frame) for a in node.args])
    if op == "not_":
        return ~evaluate(node.args[0], frame)
    if op == "true":
        return np.ones(frame.n, dtype=bool)
    if op == "false":
        return np.zeros(frame.n, dtype=bool)
    if op == "is_missing":
        return frame.missing[node.args[0].name].copy()
    if op == "compare":
        return _compare(frame, node)
    if op == "contains":
        return _contains(frame, node)
    if op == "not_contains":
        return ~_contains(frame, node)
    raise ExprError(f"unknown operation {op!r}")


def compile_expression(text: str, columns: list[str]):
    """Parse and bind an expression to the table's columns; raise ExprError."""
    return bind(parse(text), columns)
