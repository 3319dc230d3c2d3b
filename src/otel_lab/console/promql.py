"""A PromQL subset: parser and evaluator over the console's scraped series.

Why the console evaluates PromQL instead of both sides being generated from a neutral panel
definition: the dashboards and the alert rules are already PromQL, checked by ``promtool`` and
executed against a real Prometheus in ``tests/deploy``; a neutral definition would need a
second generator (and a second set of semantics) for Prometheus *and* for the console, and
the rule files could not stay the truth. Evaluating the subset they use (about 700 lines)
keeps one definition, and ``tests/deploy/test_console_parity.py`` compares the numbers with
Prometheus on the same samples.

Supported (what ``deploy/grafana/dashboards`` and ``deploy/prometheus/rules`` use, plus a
little): selectors with ``= != =~ !~`` (also ``{__name__=~"..."}``), range selectors,
``rate increase irate delta idelta *_over_time histogram_quantile vector scalar time abs
clamp_min clamp_max round ceil floor sqrt exp ln label_replace absent``, aggregations
``sum avg min max count stddev stdvar topk bottomk`` with ``by``/``without``, arithmetic
``+ - * / % ^``, comparisons (filters, or ``bool``), ``and or unless`` with ``on``/
``ignoring``, ``group_left``/``group_right``. Semantics follow Prometheus 2.x: closed
``[t - range, t]`` windows, a 5 minute look-back for instant selectors, stale markers,
extrapolated ``rate``/``increase``.
"""

from __future__ import annotations

import math
import re
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, TypedDict

LOOKBACK_MS = 5 * 60 * 1000
NAME = "__name__"
Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs, __name__ included


class PromQLError(ValueError):
    """A query the subset cannot parse or evaluate (the API answers 400)."""


# ============================================================================ series storage


@dataclass
class Series:
    """One series' samples in time order; ``stale`` holds the times of stale markers."""

    labels: Labels
    ts: list[int]  # milliseconds
    vals: list[float]
    stale: list[int] = field(default_factory=list)
    _resets: list[float] | None = None

    def resets(self) -> list[float]:
        """Prefix sums of counter-reset corrections, so rate over any window is O(1)."""
        if self._resets is None:
            acc, out, prev = 0.0, [0.0] * len(self.vals), 0.0
            for i, v in enumerate(self.vals):
                if v < prev:
                    acc += prev
                out[i] = acc
                prev = v
            self._resets = out
        return self._resets


class Matcher:
    __slots__ = ("_re", "name", "op", "value")

    def __init__(self, name: str, op: str, value: str) -> None:
        self.name, self.op, self.value = name, op, value
        self._re = None
        if op in ("=~", "!~"):
            try:
                self._re = re.compile(value)  # fullmatch: PromQL regexes are anchored
            except re.error as exc:
                raise PromQLError(f"bad regular expression {value!r}: {exc}") from None

    def matches(self, actual: str) -> bool:
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = self._re.fullmatch(actual) is not None  # type: ignore[union-attr]
        return hit if self.op == "=~" else not hit

    def __repr__(self) -> str:
        return f"{self.name}{self.op}{self.value!r}"


def matcher_key(matchers: Sequence[Matcher]) -> tuple[tuple[str, str, str], ...]:
    """Matchers as a hashable key: the same selector written twice gives the same key."""
    return tuple(sorted((m.name, m.op, m.value) for m in matchers))


def matches_all(labels: Labels | dict[str, str], matchers: Sequence[Matcher]) -> bool:
    d = dict(labels) if not isinstance(labels, dict) else labels
    return all(m.matches(d.get(m.name, "")) for m in matchers)


class Source(Protocol):
    """Where samples come from: the console's store, or series given in memory."""

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Series]:
        """Every series matching ``matchers`` with its samples in ``[start_ms, end_ms]``."""


class MemorySource:
    """Series held in memory (rule tests, recorded rules, the parity test)."""

    def __init__(self, series: Iterable[Series] = ()) -> None:
        self.series = list(series)

    def add(self, labels: dict[str, str], ts: list[int], vals: list[float]) -> None:
        self.series.append(Series(tuple(sorted(labels.items())), ts, vals))

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Series]:
        out = []
        for s in self.series:
            if matches_all(s.labels, matchers):
                lo, hi = bisect_left(s.ts, start_ms), bisect_right(s.ts, end_ms)
                slo, shi = bisect_left(s.stale, start_ms), bisect_right(s.stale, end_ms)
                out.append(Series(s.labels, s.ts[lo:hi], s.vals[lo:hi], s.stale[slo:shi]))
        return out


# ============================================================================ syntax tree


@dataclass
class Num:
    value: float


@dataclass
class Str:
    value: str


@dataclass
class Selector:
    matchers: list[Matcher]
    range_ms: int | None = None
    offset_ms: int = 0
    text: str = ""


@dataclass
class Call:
    func: str
    args: list[Node]


@dataclass
class Agg:
    op: str
    expr: Node
    grouping: list[str] | None  # None: no clause; labels for by/without
    without: bool = False
    param: Node | None = None


@dataclass
class Binary:
    op: str
    lhs: Node
    rhs: Node
    bool_: bool = False
    on: list[str] | None = None  # on(...) labels, or None
    ignoring: list[str] = field(default_factory=list)
    group: str | None = None  # "left" / "right"
    include: list[str] = field(default_factory=list)


@dataclass
class Unary:
    op: str
    expr: Node


Node: TypeAlias = Num | Str | Selector | Call | Agg | Binary | Unary


class _Matching(TypedDict, total=False):
    """A binary operator's modifiers, read before its right-hand side."""

    bool_: bool
    on: list[str]
    ignoring: list[str]
    group: str
    include: list[str]


# ============================================================================ parser

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?
               |[iI][nN][fF](?![\w:])|[nN][aA][nN](?![\w:]))
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],:@])
    """,
    re.VERBOSE,
)
_DURATION_PART = re.compile(r"(\d+)(ms|[smhdwy])")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
             "w": 604_800_000, "y": 31_536_000_000}  # fmt: skip
AGGREGATIONS = {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk",
                "group", "quantile"}  # fmt: skip
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless"}  # fmt: skip
# Lowest to highest precedence.
_LEVELS: list[set[str]] = [
    {"or"},
    {"and", "unless"},
    {"==", "!=", "<=", "<", ">=", ">"},
    {"+", "-"},
    {"*", "/", "%"},
]
COMPARISONS = {"==", "!=", "<=", "<", ">=", ">"}
SET_OPS = {"and", "or", "unless"}


def parse_duration_ms(text: str) -> int:
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise PromQLError(f"bad duration {text!r}")
    return sum(int(n) * _UNITS_MS[u] for n, u in parts)


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), body)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise PromQLError(f"unexpected character {text[pos]!r} at {pos}")
            kind = m.lastgroup or ""
            if kind != "ws":
                self.tokens.append((kind, m.group(), pos))
            pos = m.end()
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str, int]:
        j = self.i + k
        return self.tokens[j] if j < len(self.tokens) else ("eof", "", len(self.text))

    def next(self) -> tuple[str, str, int]:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        _kind, text, pos = self.next()
        if text != value:
            raise PromQLError(f"expected {value!r} at {pos}, found {text or 'end'!r}")

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value and self.peek()[0] in ("op", "ident"):
            self.i += 1
            return True
        return False

    def parse(self) -> Node:
        expr = self.expr(0)
        if self.peek()[0] != "eof":
            _kind, text, pos = self.peek()
            raise PromQLError(f"unexpected {text!r} at {pos}")
        return expr

    def expr(self, level: int) -> Node:
        if level == len(_LEVELS):
            return self.power()
        lhs = self.expr(level + 1)
        while True:
            kind, text, _ = self.peek()
            if text not in _LEVELS[level] or kind not in ("op", "ident"):
                return lhs
            self.next()
            matching = self.modifiers(text)
            lhs = Binary(text, lhs, self.expr(level + 1), **matching)

    def modifiers(self, op: str) -> _Matching:
        matching: _Matching = {}
        if self.accept("bool"):
            if op not in COMPARISONS:
                raise PromQLError("bool is only for comparisons")
            matching["bool_"] = True
        if self.accept("on"):
            matching["on"] = self.label_list()
        elif self.accept("ignoring"):
            matching["ignoring"] = self.label_list()
        for side in ("left", "right"):
            if self.accept(f"group_{side}"):
                matching["group"] = side
                if self.peek()[1] == "(":
                    matching["include"] = self.label_list()
        return matching

    def power(self) -> Node:
        base = self.unary()
        if self.peek()[1] == "^":
            self.next()
            matching = self.modifiers("^")
            return Binary("^", base, self.power(), **matching)  # right-associative
        return base

    def unary(self) -> Node:
        kind, text, _ = self.peek()
        if kind == "op" and text in ("-", "+"):
            self.next()
            inner = self.power()
            if text == "-":
                if isinstance(inner, Num):
                    return Num(-inner.value)
                return Unary("-", inner)
            return inner
        return self.postfix(self.atom())

    def postfix(self, node: Node) -> Node:
        while True:
            kind, text, pos = self.peek()
            if text == "[":
                self.next()
                k, dur, p = self.next()
                if k not in ("duration", "number"):
                    raise PromQLError(f"expected a duration at {p}")
                if self.peek()[1] == ":":
                    raise PromQLError("subqueries are not supported")
                self.expect("]")
                if not isinstance(node, Selector) or node.range_ms is not None:
                    raise PromQLError(f"a range needs an instant vector selector at {pos}")
                node.range_ms = parse_duration_ms(dur if k == "duration" else dur + "s")
            elif text == "offset" and kind == "ident":
                self.next()
                k, dur, p = self.next()
                if not isinstance(node, Selector):
                    raise PromQLError("offset needs a selector")
                node.offset_ms = parse_duration_ms(dur)
            else:
                return node

    def label_list(self) -> list[str]:
        self.expect("(")
        names: list[str] = []
        while self.peek()[1] != ")":
            kind, text, pos = self.next()
            if kind != "ident":
                raise PromQLError(f"expected a label name at {pos}")
            names.append(text)
            if not self.accept(","):
                break
        self.expect(")")
        return names

    def atom(self) -> Node:
        kind, text, pos = self.next()
        if kind == "number":
            return Num(float(int(text, 16)) if text.lower().startswith("0x") else float(text))
        if kind == "duration":
            raise PromQLError(f"unexpected duration {text!r} at {pos}")
        if kind == "string":
            return Str(_unquote(text))
        if text == "(":
            inner = self.expr(0)
            self.expect(")")
            return inner
        if text == "{":
            return self.selector(None, pos)
        if kind == "ident":
            if text in AGGREGATIONS and self.peek()[1] in ("(", "by", "without"):
                return self.aggregation(text)
            if self.peek()[1] == "(" and text not in KEYWORDS:
                self.next()
                args: list[Node] = []
                while self.peek()[1] != ")":
                    args.append(self.expr(0))
                    if not self.accept(","):
                        break
                self.expect(")")
                return Call(text, args)
            if self.peek()[1] == "{":
                self.next()
                return self.selector(text, pos)
            return Selector([Matcher(NAME, "=", text)], text=text)
        raise PromQLError(f"unexpected {text or 'end of query'!r} at {pos}")

    def selector(self, name: str | None, start: int) -> Selector:
        matchers = [Matcher(NAME, "=", name)] if name else []
        while self.peek()[1] != "}":
            kind, label, pos = self.next()
            if kind != "ident":
                raise PromQLError(f"expected a label name at {pos}")
            k, op, p = self.next()
            if op not in ("=", "!=", "=~", "!~"):
                raise PromQLError(f"expected a label matcher at {p}")
            k, value, p = self.next()
            if k != "string":
                raise PromQLError(f"expected a quoted label value at {p}")
            matchers.append(Matcher(label, op, _unquote(value)))
            if not self.accept(","):
                break
        _, _, end = self.next()
        if not any(m.op in ("=", "=~") and not m.matches("") for m in matchers):
            raise PromQLError("a selector needs at least one matcher that does not match ''")
        return Selector(matchers, text=self.text[start : end + 1])

    def aggregation(self, op: str) -> Agg:
        grouping, without = None, False
        if self.peek()[1] in ("by", "without"):
            without = self.next()[1] == "without"
            grouping = self.label_list()
        self.expect("(")
        param = None
        if op in ("topk", "bottomk", "quantile"):
            param = self.expr(0)
            self.expect(",")
        inner = self.expr(0)
        self.expect(")")
        if grouping is None and self.peek()[1] in ("by", "without"):
            without = self.next()[1] == "without"
            grouping = self.label_list()
        return Agg(op, inner, grouping, without, param)


_PARSED: dict[str, Node] = {}


def parse(text: str) -> Node:
    """The syntax tree of ``text`` (cached: dashboards and rules repeat their queries)."""
    tree = _PARSED.get(text)
    if tree is None:
        if len(text) > 20_000:
            raise PromQLError("query too long")
        try:
            tree = _Parser(text).parse()
        except RecursionError:
            raise PromQLError("query nested too deeply") from None
        if len(_PARSED) > 2000:
            _PARSED.clear()
        _PARSED[text] = tree
    return tree


def nodes(tree: Node) -> Iterable[Node]:
    """Every node of the tree, parents first."""
    yield tree
    if isinstance(tree, Call):
        for a in tree.args:
            yield from nodes(a)
    elif isinstance(tree, Agg):
        yield from nodes(tree.expr)
        if tree.param is not None:
            yield from nodes(tree.param)
    elif isinstance(tree, Binary):
        yield from nodes(tree.lhs)
        yield from nodes(tree.rhs)
    elif isinstance(tree, Unary):
        yield from nodes(tree.expr)


def selectors(tree: Node) -> Iterable[Selector]:
    """Every selector in the tree (to fetch their data once for a range of steps)."""
    return (node for node in nodes(tree) if isinstance(node, Selector))


# ============================================================================ evaluation

Vector = list[tuple[Labels, float]]
# What a node evaluates to at one instant (a range vector only as a function's argument).
Value: TypeAlias = "float | str | Vector | _Range"
# A range function's vectors at every step, shared by a dashboard's panels: the function,
# the selector (matchers, range, offset) and the steps (first, last, how many).
StepKey = tuple[str, tuple[tuple[str, str, str], ...], int | None, int, int, int, int]


def _drop(labels: Labels, names: Iterable[str]) -> Labels:
    gone = set(names)
    return tuple(p for p in labels if p[0] not in gone)


def _keep(labels: Labels, names: Iterable[str]) -> Labels:
    kept = set(names)
    return tuple(p for p in labels if p[0] in kept)


def _without_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != NAME)


class Evaluator:
    """Evaluates trees at instants; ``prepare`` fetches each selector's data once."""

    def __init__(
        self,
        source: Source,
        lookback_ms: int = LOOKBACK_MS,
        shared: dict[StepKey, dict[int, Vector]] | None = None,
    ) -> None:
        """``shared``: range-function results by selector and steps, for evaluators of one
        source and time range (a dashboard's panels: p50 and p95 rate the same buckets)."""
        self.source = source
        self.lookback_ms = lookback_ms
        self._shared = {} if shared is None else shared
        self._cache: dict[int, list[Series]] = {}
        # id(range function call) -> its vector at each step of the current range query
        self._steps: dict[int, dict[int, Vector]] = {}
        # Per-label-set work that is the same at every step: aggregation group keys (per
        # aggregation node) and histogram buckets.
        self._group_keys: dict[int, dict[Labels, Labels]] = {}
        self._bucket_keys: dict[Labels, tuple[Labels, float] | None] = {}

    def prepare(self, tree: Node, start_ms: int, end_ms: int) -> None:
        for sel in selectors(tree):
            reach = (sel.range_ms or self.lookback_ms) + sel.offset_ms
            self._cache[id(sel)] = self.source.select(
                sel.matchers, start_ms - reach, end_ms - sel.offset_ms
            )

    def _series(self, sel: Selector, t: int) -> list[Series]:
        cached = self._cache.get(id(sel))
        if cached is not None:
            return cached
        reach = (sel.range_ms or self.lookback_ms) + sel.offset_ms
        return self.source.select(sel.matchers, t - reach, t - sel.offset_ms)

    # ------------------------------------------------------------------ entry points

    def instant(self, tree: Node, t_ms: int) -> float | Vector:
        """A scalar, or a vector of (labels, value)."""
        try:
            value = self.eval(tree, t_ms)
        except PromQLError:
            raise
        except (ValueError, TypeError, IndexError, ArithmeticError, RecursionError) as exc:
            # An odd combination the subset does not check for up front: still the query's
            # fault, not the console's.
            raise PromQLError(f"cannot evaluate this query: {type(exc).__name__}: {exc}") from None
        if isinstance(value, str):
            raise PromQLError("a query cannot return a string")
        if isinstance(value, _Range):
            raise PromQLError("a range vector cannot be shown; apply rate() or similar")
        return value

    def range(
        self, tree: Node, start_ms: int, end_ms: int, step_ms: int
    ) -> dict[Labels, list[tuple[int, float]]]:
        """Series of (t, value) for every step; a scalar result has the empty label set."""
        if step_ms <= 0:
            raise PromQLError("step must be positive")
        if (end_ms - start_ms) // step_ms > 11_000:
            raise PromQLError("too many points: use a larger step")
        self.prepare(tree, start_ms, end_ms)
        steps = list(range(start_ms, end_ms + 1, step_ms))
        self._prepare_steps(tree, steps)
        out: dict[Labels, list[tuple[int, float]]] = {}
        try:
            for t in steps:
                value = self.instant(tree, t)
                if isinstance(value, float):
                    out.setdefault((), []).append((t, value))
                else:
                    for labels, v in value:
                        out.setdefault(labels, []).append((t, v))
        finally:
            self._steps.clear()
        return out

    def _prepare_steps(self, tree: Node, steps: list[int]) -> None:
        """``rate(x[5m])`` and the other range functions of a selector, at every step at
        once: the per-step evaluation then only aggregates and combines their vectors."""
        for node in nodes(tree):
            if not (
                isinstance(node, Call)
                and node.func in _RANGE_FUNCS
                and len(node.args) == 1
                and isinstance(node.args[0], Selector)
                and node.args[0].range_ms is not None
            ):
                continue
            sel = node.args[0]
            series = self._series(sel, steps[0]) if id(sel) in self._cache else None
            if series is None:
                continue
            key: StepKey = (node.func, matcher_key(sel.matchers), sel.range_ms, sel.offset_ms,
                   steps[0], steps[-1], len(steps))  # fmt: skip
            if key not in self._shared:
                vectors = _stepped(_RANGE_FUNCS[node.func], sel, series, steps)
                self._shared[key] = dict(zip(steps, vectors, strict=True))
            self._steps[id(node)] = self._shared[key]

    # ------------------------------------------------------------------ nodes

    def eval(self, node: Node, t: int) -> Value:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Str):
            return node.value
        if isinstance(node, Selector):
            if node.range_ms is not None:
                return _Range(node, self._series(node, t), t - node.offset_ms)
            return self._instant_vector(node, t)
        if isinstance(node, Unary):
            value = self.eval(node.expr, t)
            if isinstance(value, float):
                return -value
            if not isinstance(value, list):
                raise PromQLError("unary minus needs a scalar or an instant vector")
            return [(_without_name(lb), -v) for lb, v in value]
        if isinstance(node, Binary):
            return self._binary(node, t)
        if isinstance(node, Agg):
            return self._aggregate(node, t)
        return self._call(node, t)

    def _instant_vector(self, sel: Selector, t: int) -> Vector:
        at = t - sel.offset_ms
        out: Vector = []
        for s in self._series(sel, t):
            i = bisect_right(s.ts, at) - 1
            if i < 0 or s.ts[i] < at - self.lookback_ms:
                continue
            if s.stale:
                j = bisect_right(s.stale, at) - 1
                if j >= 0 and s.stale[j] > s.ts[i]:
                    continue  # a stale marker after the last sample: the series is gone
            out.append((s.labels, s.vals[i]))
        return out

    def _vector(self, node: Node, t: int, what: str) -> Vector:
        value = self.eval(node, t)
        if not isinstance(value, list):
            raise PromQLError(f"{what} needs an instant vector")
        return value

    def _scalar(self, node: Node, t: int, what: str) -> float:
        value = self.eval(node, t)
        if not isinstance(value, float):
            raise PromQLError(f"{what} needs a scalar")
        return value

    def _string(self, node: Node, t: int, what: str) -> str:
        value = self.eval(node, t)
        if not isinstance(value, str):
            raise PromQLError(f"{what} needs a string")
        return value

    # ------------------------------------------------------------------ binary operators

    def _binary(self, node: Binary, t: int) -> float | Vector:
        lhs, rhs = self.eval(node.lhs, t), self.eval(node.rhs, t)
        op = node.op
        if isinstance(lhs, str | _Range) or isinstance(rhs, str | _Range):
            raise PromQLError(f"operator {op} needs instant vectors or scalars")
        if op in SET_OPS:
            if not isinstance(lhs, list) or not isinstance(rhs, list):
                raise PromQLError(f"{op} needs vectors on both sides")
            return self._set_op(node, lhs, rhs)
        if isinstance(lhs, float):
            if isinstance(rhs, float):
                if op in COMPARISONS and not node.bool_:
                    raise PromQLError("comparisons between scalars need bool")
                return _apply(op, lhs, rhs, node.bool_)[1]
            return self._scalar_op(node, rhs, lhs, scalar_left=True)
        if isinstance(rhs, float):
            return self._scalar_op(node, lhs, rhs, scalar_left=False)
        return self._vector_op(node, lhs, rhs)

    def _scalar_op(self, node: Binary, vec: Vector, scalar: float, *, scalar_left: bool) -> Vector:
        op = node.op
        out: Vector = []
        for labels, v in vec:
            a, b = (scalar, v) if scalar_left else (v, scalar)
            keep, value = _apply(op, a, b, node.bool_)
            if not keep:
                continue
            if op in COMPARISONS and not node.bool_:
                value = v  # a filter keeps the vector's own value
            drop = op not in COMPARISONS or node.bool_
            out.append((_without_name(labels) if drop else labels, value))
        return out

    def _signature(self, node: Binary, labels: Labels) -> Labels:
        if node.on is not None:
            return _keep(labels, node.on)
        return _drop(labels, [NAME, *node.ignoring])

    def _set_op(self, node: Binary, lhs: Vector, rhs: Vector) -> Vector:
        right = {self._signature(node, lb) for lb, _ in rhs}
        if node.op == "and":
            return [(lb, v) for lb, v in lhs if self._signature(node, lb) in right]
        if node.op == "unless":
            return [(lb, v) for lb, v in lhs if self._signature(node, lb) not in right]
        left = {self._signature(node, lb) for lb, _ in lhs}
        return lhs + [(lb, v) for lb, v in rhs if self._signature(node, lb) not in left]

    def _vector_op(self, node: Binary, lhs: Vector, rhs: Vector) -> Vector:
        if node.group == "right":
            lhs, rhs = rhs, lhs
        one: dict[Labels, tuple[Labels, float]] = {}
        for labels, v in rhs:
            sig = self._signature(node, labels)
            if sig in one:
                raise PromQLError(
                    "many-to-many matching: several series on one side share the labels "
                    f"{dict(sig)}; aggregate or use on()/ignoring()"
                )
            one[sig] = (labels, v)
        out: Vector = []
        seen: set[Labels] = set()
        for labels, v in lhs:
            sig = self._signature(node, labels)
            match = one.get(sig)
            if match is None:
                continue
            other_labels, other = match
            a, b = (other, v) if node.group == "right" else (v, other)
            keep, value = _apply(node.op, a, b, node.bool_)
            if not keep:
                continue
            if node.op in COMPARISONS and not node.bool_:
                value = a
            result = _result_labels(node, labels, other_labels)
            if node.group is None:
                if result in seen:
                    raise PromQLError("many-to-one matching needs group_left or group_right")
                seen.add(result)
            out.append((result, value))
        return out

    # ------------------------------------------------------------------ aggregations

    def _aggregate(self, node: Agg, t: int) -> Vector:
        vec = self._vector(node.expr, t, node.op)
        param = self._scalar(node.param, t, node.op) if node.param is not None else None
        groups: dict[Labels, list[tuple[Labels, float]]] = {}
        keys = self._group_keys.setdefault(id(node), {})  # the same label sets at every step
        for labels, v in vec:
            key = keys.get(labels)
            if key is None:
                if node.grouping is None:
                    key = ()
                elif node.without:
                    key = _drop(labels, [NAME, *node.grouping])
                else:
                    key = _keep(labels, node.grouping)
                keys[labels] = key
            groups.setdefault(key, []).append((labels, v))
        out: Vector = []
        for key, members in groups.items():
            values = [v for _, v in members]
            op = node.op
            if op in ("topk", "bottomk"):
                k = int(param or 0)
                ranked = sorted(members, key=lambda m: m[1], reverse=op == "topk")
                out.extend(ranked[: max(k, 0)])
                continue
            if op == "sum":
                value = math.fsum(values)
            elif op == "avg":
                value = math.fsum(values) / len(values)
            elif op == "min":
                value = min(values, key=lambda x: (math.isnan(x), x))
            elif op == "max":
                value = max(values, key=lambda x: (not math.isnan(x), x))
            elif op == "count":
                value = float(len(values))
            elif op == "group":
                value = 1.0
            elif op in ("stddev", "stdvar"):
                mean = math.fsum(values) / len(values)
                var = math.fsum((x - mean) ** 2 for x in values) / len(values)
                value = math.sqrt(var) if op == "stddev" else var
            elif op == "quantile":
                value = _quantile(math.nan if param is None else param, sorted(values))
            else:  # pragma: no cover - the parser knows the list
                raise PromQLError(f"unknown aggregation {op}")
            out.append((key, value))
        return out

    # ------------------------------------------------------------------ functions

    def _call(self, node: Call, t: int) -> Value:
        name, args = node.func, node.args
        handler = _RANGE_FUNCS.get(name)
        if handler is not None:
            stepped = self._steps.get(id(node))
            if stepped is not None and t in stepped:
                return stepped[t]
            if len(args) != 1:
                raise PromQLError(f"{name}() takes one range vector")
            rng = self.eval(args[0], t)
            if not isinstance(rng, _Range):
                raise PromQLError(f"{name}() needs a range vector, e.g. {name}(x[5m])")
            return _apply_range_fn(handler, rng)
        special = _SPECIAL_FUNCS.get(name)
        if special is not None:
            return special(self, args, t)
        simple = _SIMPLE.get(name)
        if simple is not None:
            vec = self._vector(args[0], t, name)
            extra = [self.eval(a, t) for a in args[1:]]
            return [(_without_name(lb), simple(v, *extra)) for lb, v in vec]
        raise PromQLError(f"function {name}() is not in the console's PromQL subset")

    def _histogram_quantile(self, args: list[Node], t: int) -> Value:
        if len(args) != 2:
            raise PromQLError("histogram_quantile(q, buckets)")
        q = self.eval(args[0], t)
        if not isinstance(q, float):
            raise PromQLError("histogram_quantile needs a scalar quantile")
        buckets = self._vector(args[1], t, "histogram_quantile")
        return _histogram_quantile(q, buckets, self._bucket_keys)

    def _to_vector(self, args: list[Node], t: int) -> Value:
        return [((), self._scalar(args[0], t, "vector()"))]

    def _to_scalar(self, args: list[Node], t: int) -> Value:
        vec = self._vector(args[0], t, "scalar")
        return vec[0][1] if len(vec) == 1 else math.nan

    def _time(self, args: list[Node], t: int) -> Value:
        return t / 1000.0

    def _absent(self, args: list[Node], t: int) -> Value:
        if self._vector(args[0], t, "absent"):
            return []
        sel = args[0] if isinstance(args[0], Selector) else None
        labels = tuple(sorted((m.name, m.value) for m in (sel.matchers if sel else [])
                              if m.op == "=" and m.name != NAME))  # fmt: skip
        return [(labels, 1.0)]

    def _label_replace(self, args: list[Node], t: int) -> Value:
        vec = self._vector(args[0], t, "label_replace")
        dst, repl, src, regex = (self._string(a, t, "label_replace") for a in args[1:5])
        try:
            pattern = re.compile(f"^(?:{regex})$")
        except re.error as exc:
            raise PromQLError(f"invalid regular expression in label_replace(): {exc}") from None
        out: Vector = []
        for labels, v in vec:
            d = dict(labels)
            m = pattern.match(d.get(src, ""))
            if m:
                new = m.expand(re.sub(r"\$(\d+)", r"\\\1", repl))
                if new:
                    d[dst] = new
                else:
                    d.pop(dst, None)
            out.append((tuple(sorted(d.items())), v))
        return out


# Functions that are neither range functions nor applied value by value.
_SPECIAL_FUNCS: dict[str, Callable[[Evaluator, list[Node], int], Value]] = {
    "histogram_quantile": Evaluator._histogram_quantile,
    "vector": Evaluator._to_vector,
    "scalar": Evaluator._to_scalar,
    "time": Evaluator._time,
    "absent": Evaluator._absent,
    "label_replace": Evaluator._label_replace,
}


@dataclass
class _Range:
    sel: Selector
    series: list[Series]
    t: int  # evaluation time minus offset


# A range function applied to one series at several evaluation times (increasing): its value
# at each, None where the window holds too few samples. The instant path calls it with one
# time; ``Evaluator.range`` with every step, so each window is found by a bisect that starts
# where the previous step's ended and each series' labels are handled once per query.
RangeFn = Callable[[Series, Sequence[int], int], list[float | None]]


def _windows(ts: Sequence[int], times: Sequence[int], range_ms: int) -> Iterator[tuple[int, int]]:
    """The samples ``ts[lo:hi]`` in ``(end - range_ms, end]`` for each step ``end``, in order:
    both bounds only move forward, so a range query costs one pass over the samples."""
    lo = hi = 0
    for end in times:
        lo = bisect_left(ts, end - range_ms, lo)
        hi = bisect_right(ts, end, max(lo, hi))
        yield lo, hi


def _extrapolated(is_counter: bool, is_rate: bool) -> RangeFn:
    """Prometheus 2.x ``extrapolatedRate``: rate, increase and delta."""

    def run(s: Series, times: Sequence[int], range_ms: int) -> list[float | None]:
        ts, vals = s.ts, s.vals
        resets = s.resets() if is_counter else None
        out: list[float | None] = []
        for end, (lo, hi) in zip(times, _windows(ts, times, range_ms), strict=True):
            start = end - range_ms
            n = hi - lo
            if n < 2:
                out.append(None)
                continue
            first_t, last_t = ts[lo], ts[hi - 1]
            first_v, last_v = vals[lo], vals[hi - 1]
            result = last_v - first_v
            if resets is not None:
                result += resets[hi - 1] - resets[lo]
            if result == 0:  # an idle counter: the extrapolation below scales 0 to 0
                out.append(result)
                continue
            to_start = (first_t - start) / 1000.0
            to_end = (end - last_t) / 1000.0
            sampled = (last_t - first_t) / 1000.0
            average = sampled / (n - 1)
            if is_counter and result > 0 and first_v >= 0:
                to_zero = sampled * (first_v / result)
                to_start = min(to_start, to_zero)
            threshold = average * 1.1
            interval = sampled
            interval += to_start if to_start < threshold else average / 2
            interval += to_end if to_end < threshold else average / 2
            result *= interval / sampled
            if is_rate:
                result /= range_ms / 1000.0
            out.append(result)
        return out

    return run


def _instant_delta(is_rate: bool) -> RangeFn:
    def run(s: Series, times: Sequence[int], range_ms: int) -> list[float | None]:
        ts, vals = s.ts, s.vals
        out: list[float | None] = []
        for lo, hi in _windows(ts, times, range_ms):
            if hi - lo < 2:
                out.append(None)
                continue
            (t0, v0), (t1, v1) = (ts[hi - 2], vals[hi - 2]), (ts[hi - 1], vals[hi - 1])
            diff = v1 if is_rate and v1 < v0 else v1 - v0
            if is_rate:
                diff /= (t1 - t0) / 1000.0
            out.append(diff)
        return out

    return run


def _over_time(fn: Callable[[list[float]], float]) -> RangeFn:
    def run(s: Series, times: Sequence[int], range_ms: int) -> list[float | None]:
        ts, vals = s.ts, s.vals
        return [fn(vals[lo:hi]) if hi > lo else None for lo, hi in _windows(ts, times, range_ms)]

    return run


def _apply_range_fn(fn: RangeFn, rng: _Range) -> Vector:
    """A range function at one instant, over every series of the range vector."""
    out: Vector = []
    range_ms = rng.sel.range_ms or 0
    for s in rng.series:
        value = fn(s, (rng.t,), range_ms)[0]
        if value is not None:
            out.append((_without_name(s.labels), value))
    return out


def _stepped(fn: RangeFn, sel: Selector, series: list[Series], steps: list[int]) -> list[Vector]:
    """A range function at every step of a range query: one vector per step."""
    out: list[Vector] = [[] for _ in steps]
    times = [t - sel.offset_ms for t in steps]
    range_ms = sel.range_ms or 0
    for s in series:
        if not s.ts:
            continue
        # Only the steps whose window can hold a sample: a young series in a long range
        # costs its own length, not the range's.
        first = bisect_left(times, s.ts[0])
        last = bisect_right(times, s.ts[-1] + range_ms)
        labels = _without_name(s.labels)
        values = fn(s, times[first:last], range_ms)
        for vec, value in zip(out[first:last], values, strict=True):
            if value is not None:
                vec.append((labels, value))
    return out


_RANGE_FUNCS: dict[str, RangeFn] = {
    "rate": _extrapolated(True, True),
    "increase": _extrapolated(True, False),
    "delta": _extrapolated(False, False),
    "irate": _instant_delta(True),
    "idelta": _instant_delta(False),
    "avg_over_time": _over_time(lambda v: math.fsum(v) / len(v)),
    "sum_over_time": _over_time(math.fsum),
    "min_over_time": _over_time(min),
    "max_over_time": _over_time(max),
    "count_over_time": _over_time(lambda v: float(len(v))),
    "last_over_time": _over_time(lambda v: v[-1]),
}

# exp() of more than this is past float's range, where math.exp raises: +Inf, as in Go.
_EXP_MAX = math.log(sys.float_info.max)


def _round(v: float, to: float) -> float:
    """Prometheus' round(v, to): to the nearest multiple of ``to``; NaN for ``to`` 0 (its
    ``floor(v * (1/to) + 0.5) / (1/to)`` is Inf/Inf there)."""
    if not math.isfinite(v):
        return v
    if to == 0:
        return math.nan
    scaled = v / to + 0.5
    return math.floor(scaled) * to if math.isfinite(scaled) else v


_SIMPLE: dict[str, Callable[..., float]] = {
    "abs": abs,
    "ceil": lambda v: float(math.ceil(v)) if math.isfinite(v) else v,
    "floor": lambda v: float(math.floor(v)) if math.isfinite(v) else v,
    "round": lambda v, to=1.0: _round(v, to),
    "sqrt": lambda v: math.sqrt(v) if v >= 0 else math.nan,
    "exp": lambda v: math.inf if v > _EXP_MAX else math.exp(v),
    "ln": lambda v: math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan),
    "clamp_min": lambda v, lo: max(v, lo),
    "clamp_max": lambda v, hi: min(v, hi),
}


def _apply(op: str, a: float, b: float, as_bool: bool) -> tuple[bool, float]:
    """(keep the sample, value); comparisons without bool filter."""
    if op == "+":
        return True, a + b
    if op == "-":
        return True, a - b
    if op == "*":
        return True, a * b
    if op == "/":
        if b == 0:
            return True, math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
        return True, a / b
    if op == "%":
        return True, math.fmod(a, b) if b != 0 else math.nan
    if op == "^":
        try:
            return True, a**b
        except (OverflowError, ZeroDivisionError):
            return True, math.inf
    hit = {
        "==": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]
    if as_bool:
        return True, 1.0 if hit else 0.0
    return hit, a


def _result_labels(node: Binary, labels: Labels, other: Labels) -> Labels:
    if node.op not in COMPARISONS or node.bool_:
        labels = _without_name(labels)
    if node.group is None:
        if node.on is not None:
            return _keep(labels, node.on)
        return _drop(labels, node.ignoring)
    if node.include:
        d = dict(labels)
        o = dict(other)
        for name in node.include:
            if name in o:
                d[name] = o[name]
            else:
                d.pop(name, None)
        return tuple(sorted(d.items()))
    return labels


def _quantile(q: float, values: list[float]) -> float:
    if not values:
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    rank = q * (len(values) - 1)
    lo = max(0, math.floor(rank))
    hi = min(len(values) - 1, lo + 1)
    weight = rank - math.floor(rank)
    return values[lo] * (1 - weight) + values[hi] * weight


def _histogram_quantile(
    q: float, vec: Vector, keys: dict[Labels, tuple[Labels, float] | None] | None = None
) -> Vector:
    """``keys`` remembers each bucket series' (histogram, upper bound) across steps."""
    keys = {} if keys is None else keys
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for labels, v in vec:
        if labels in keys:
            known = keys[labels]
        else:
            known = keys[labels] = _bucket_of(labels)
        if known is not None:
            groups.setdefault(known[0], []).append((known[1], v))
    return [(key, _bucket_quantile(q, buckets)) for key, buckets in groups.items()]


def _bucket_of(labels: Labels) -> tuple[Labels, float] | None:
    le = dict(labels).get("le")
    if le is None:
        return None
    try:
        bound = float(le)
    except ValueError:
        return None
    return tuple(p for p in labels if p[0] not in (NAME, "le")), bound


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``bucketQuantile`` (classic histograms)."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets)
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    merged: list[list[float]] = []
    for bound, count in buckets:  # coalesce equal bounds
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    for i in range(1, len(merged)):  # ensure monotonic counts
        if merged[i][1] < merged[i - 1][1]:
            merged[i][1] = merged[i - 1][1]
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next(i for i, (_, c) in enumerate(merged) if c >= rank)
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


def format_labels(labels: Labels) -> dict[str, str]:
    return dict(labels)


def evaluate(source: Source, query: str, t_ms: int) -> float | Vector:
    """One instant query."""
    return Evaluator(source).instant(parse(query), t_ms)
