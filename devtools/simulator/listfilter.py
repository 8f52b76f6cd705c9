"""The Vertex AI list ``filter``: the subset of AIP-160 batch-relay and its users send, compiled into a
predicate over jobs. ``AND``, ``OR`` (binding tighter, as in AIP-160), ``NOT``, parentheses, ``state`` = !=,
``create_time`` = != < <= > >=, ``display_name`` = != and ``:`` wildcards, ``labels.k=v``, ``labels.k:*``."""

from __future__ import annotations

import datetime as dt
import operator
import re

from devtools.simulator.wire import WALL_OFFSET

# expression := factor { AND factor } ; factor := term { OR term } (OR binds tighter, as in AIP-160)
# term := [NOT | -] ( "(" expression ")" | field op value ) ; op := = != < <= > >= :
_TOKEN = re.compile(r'\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<op><=|>=|!=|=|<|>|:)|"(?P<q>[^"]*)"|(?P<w>[^\s()<>=!:"]+))')
_FIELDS = {"state", "display_name", "displayName", "create_time", "createTime", "model_display_name",
           "modelDisplayName"}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"unexpected input at {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


def compile_filter(text: str):
    """A predicate over jobs for a Vertex ``filter``, or ``ValueError`` for what the subset refuses."""
    tokens = _tokens(text)
    pos = 0

    def peek() -> tuple[str, str] | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("unexpected end of filter")
        pos += 1
        return tokens[pos - 1]

    def word(value: str) -> bool:
        tok = peek()
        return tok is not None and tok[0] == "w" and tok[1] == value

    def expression():
        parts = [factor()]
        while word("AND"):
            take()
            parts.append(factor())
        return lambda job: all(p(job) for p in parts)

    def factor():
        parts = [term()]
        while word("OR"):
            take()
            parts.append(term())
        return lambda job: any(p(job) for p in parts)

    def term():
        negate = False
        if word("NOT") or word("-"):
            take()
            negate = True
        tok = peek()
        if tok is not None and tok[0] == "lp":
            take()
            inner = expression()
            if take()[0] != "rp":
                raise ValueError("missing )")
            return (lambda job: not inner(job)) if negate else inner
        kind, field = take()
        if kind != "w" or not (field in _FIELDS or field.startswith("labels.")):
            raise ValueError(f"unsupported field {field!r}")
        kind, op = take()
        if kind != "op":
            raise ValueError(f"expected a comparison after {field!r}")
        kind, value = take()
        if kind not in ("q", "w"):
            raise ValueError(f"expected a value after {field} {op}")
        test = _restriction(field, op, value)
        return (lambda job: not test(job)) if negate else test

    predicate = expression()
    if pos != len(tokens):
        raise ValueError(f"unexpected {tokens[pos][1]!r}")
    return predicate


def _restriction(field: str, op: str, value: str):
    if field.startswith("labels."):
        key = field[len("labels."):]
        if op == ":" and value == "*":
            return lambda job: key in job.labels
        if op not in ("=", "!="):
            raise ValueError("labels support = and :*")
        return lambda job: (job.labels.get(key) == value) == (op == "=")
    if field == "state":
        if op not in ("=", "!="):
            raise ValueError("state supports = and !=")
        want = value.upper().removeprefix("JOB_STATE_")
        return lambda job: (job.state == want) == (op == "=")
    if field in ("create_time", "createTime"):
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ValueError(f"create_time needs an RFC 3339 time, not {value!r}") from None
        compare = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
                   ">=": operator.ge}.get(op)
        if compare is None:
            raise ValueError("create_time supports = != < <= > >=")
        return lambda job: compare(job.create_t + WALL_OFFSET, when)
    # display_name / model_display_name
    if op == ":":
        pattern = re.compile("^" + ".*".join(re.escape(p) for p in value.split("*")) + "$")
        return lambda job: bool(pattern.match(job.display_name or job.job_id))
    if op not in ("=", "!="):
        raise ValueError(f"{field} supports = != :")
    return lambda job: ((job.display_name or job.job_id) == value) == (op == "=")
