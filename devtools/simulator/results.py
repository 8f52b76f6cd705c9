"""What a simulated batch holds: its requests (generated from a spec's ``requests``, or the ones a create call
sent), which of them fail and with which code, the tokens each success used; and every format they are
written in — Gemini responses-file lines, inline responses, input-file lines and inline requests; Vertex AI
prediction rows (which echo their request and carry a ``status``), split in shards.

Spec (``"requests"`` in a job spec; every key optional but ``count``)::

    {"count": 10, "failed": 2, "error_codes": [3, 13],
     "usage": {"prompt": 12, "candidates": 5, "thoughts": 0, "cached": 0, "tool_use": 0},
     "without_usage": 1, "without_total": 1, "input": "file" | "inline" | "gone",
     "shuffle": false, "shards": 1, "finished": 0}

The last ``failed`` requests fail, their codes taken in turn from ``error_codes`` (Gemini default 3, Vertex
400). Of the successes, the first ``without_usage`` carry no ``usageMetadata`` and the next ``without_total``
one without ``totalTokenCount`` (Vertex rows do that). ``input`` (Gemini): the batch's input is a Files API
file (``files/input-{id}``, downloadable), its inline requests, or a file that is gone (404). ``shuffle``:
results come back in another order than the requests (Gemini). ``shards``: Vertex rows are split in that many
``predictions_NNNNN.jsonl`` files (one: ``predictions.jsonl``). ``finished``: the requests with a result when
the job ends otherwise than by succeeding (CANCELLED, EXPIRED, FAILED): its partial outputs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

from devtools.simulator.wire import GEMINI, GRPC_STATUS, REASONS, SpecError

_GEMINI_MESSAGES = {3: "Request contains an invalid argument.", 8: "Resource has been exhausted.",
                    13: "An internal error has occurred.", 4: "Deadline exceeded."}
INPUTS = ("file", "inline", "gone")
_USAGE_KEYS = {"prompt": "promptTokenCount", "candidates": "candidatesTokenCount", "thoughts": "thoughtsTokenCount",
               "cached": "cachedContentTokenCount", "tool_use": "toolUsePromptTokenCount"}


def _int(raw: dict, key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"{where}: requests.{key} must be a non-negative integer, not {value!r}")
    return value


def prompt(i: int) -> dict:
    """The request a spec's request ``i`` (0-based) sends."""
    return {"contents": [{"role": "user", "parts": [{"text": f"prompt {i + 1}"}]}]}


class Batch:
    """A batch's requests and what became of each (see the module's docstring)."""

    __slots__ = ("api", "count", "failed", "error_codes", "usage", "without_usage", "without_total", "input",
                 "shuffle", "shards", "finished", "items", "failing", "seed", "_rank")

    def __init__(self, api: str, count: int, *, failed: int = 0, error_codes: list[int] | None = None,
                 usage: dict[str, int] | None = None, without_usage: int = 0, without_total: int = 0,
                 input: str = "file", shuffle: bool = False, shards: int = 1, finished: int = 0,
                 items: list[tuple[str | None, dict]] | None = None, failing: set[int] | None = None,
                 seed: str = "") -> None:
        self.api = api
        self.count = count
        self.failed = min(failed, count)
        self.error_codes = error_codes or ([3] if api == GEMINI else [400])
        self.usage = usage if usage is not None else {"prompt": 4, "candidates": 3}
        self.without_usage = without_usage
        self.without_total = without_total
        self.input = input
        self.shuffle = shuffle
        self.shards = max(1, shards)
        self.finished = min(finished, count)
        self.items = items  # the (key, request) pairs a create call sent; None: generated
        self.failing = failing  # indexes that fail (created batches); None: the last ``failed``
        self.seed = seed
        self._rank: dict[int, int] = {}  # created batches: index -> its number among failures or successes
        if failing is not None:
            fails = oks = 0
            for i in range(count):
                if i in failing:
                    self._rank[i], fails = fails, fails + 1
                else:
                    self._rank[i], oks = oks, oks + 1

    @classmethod
    def from_spec(cls, api: str, raw: Any, where: str, seed: str) -> Batch:
        if not isinstance(raw, dict):
            raise SpecError(f"{where}: requests must be an object")
        known = {"count", "failed", "error_codes", "usage", "without_usage", "without_total", "input", "shuffle",
                 "shards", "finished"}
        if unknown := sorted(set(raw) - known):
            raise SpecError(f"{where}: unknown requests keys {unknown}; use {sorted(known)}")
        codes = raw.get("error_codes")
        if codes is not None and (not isinstance(codes, list) or not codes or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in codes)):
            raise SpecError(f"{where}: requests.error_codes must be a non-empty list of integers")
        usage = raw.get("usage")
        if usage is not None and (not isinstance(usage, dict) or any(
                k not in _USAGE_KEYS or isinstance(v, bool) or not isinstance(v, int) or v < 0
                for k, v in usage.items())):
            raise SpecError(f"{where}: requests.usage maps {sorted(_USAGE_KEYS)} to non-negative integers")
        source = raw.get("input", "file")
        if source not in INPUTS:
            raise SpecError(f"{where}: requests.input must be one of {INPUTS}")
        return cls(api, _int(raw, "count", 0, where), failed=_int(raw, "failed", 0, where), error_codes=codes,
                   usage=usage, without_usage=_int(raw, "without_usage", 0, where),
                   without_total=_int(raw, "without_total", 0, where), input=source,
                   shuffle=bool(raw.get("shuffle", False)), shards=_int(raw, "shards", 1, where) or 1,
                   finished=_int(raw, "finished", 0, where), seed=seed)

    @classmethod
    def from_requests(cls, api: str, items: list[tuple[str | None, dict]], fail_marker: str | None,
                      input: str) -> Batch:
        """A batch of the requests a create call sent; those whose JSON holds ``fail_marker`` fail."""
        failing = {i for i, (_, request) in enumerate(items)
                   if fail_marker and fail_marker in json.dumps(request)}
        return cls(api, len(items), failed=len(failing), items=items, failing=failing, input=input)

    # --- requests and outcomes --------------------------------------------------------------------------

    def key(self, i: int) -> str | None:
        return self.items[i][0] if self.items is not None else f"req-{i + 1}"

    def request(self, i: int) -> dict:
        return self.items[i][1] if self.items is not None else prompt(i)

    def fails(self, i: int) -> bool:
        if self.failing is not None:
            return i in self.failing
        return i >= self.count - self.failed

    def _failure_number(self, i: int) -> int:
        if self.failing is not None:
            return self._rank[i]
        return i - (self.count - self.failed)

    def code(self, i: int) -> int:
        return self.error_codes[self._failure_number(i) % len(self.error_codes)]

    def _success_number(self, i: int) -> int:
        return self._rank[i] if self.failing is not None else i

    def usage_metadata(self, i: int) -> dict | None:
        """The ``usageMetadata`` of success ``i``, or None for the first ``without_usage`` successes."""
        n = self._success_number(i)
        if n < self.without_usage:
            return None
        meta = {_USAGE_KEYS[k]: v for k, v in self.usage.items() if v}
        meta.setdefault("promptTokenCount", 0)
        if n >= self.without_usage + self.without_total:
            meta["totalTokenCount"] = sum(self.usage.get(k, 0) for k in ("prompt", "candidates", "thoughts",
                                                                          "tool_use"))
        return meta

    def done(self, all_done: bool) -> int:
        """How many requests have a result: all of them, or ``finished`` (a job that ended early)."""
        return self.count if all_done else self.finished

    def counts(self, done: int) -> tuple[int, int]:
        """(successes, failures) among the first ``done`` requests."""
        failed = sum(1 for i in range(done) if self.fails(i)) if self.failing is not None else max(
            0, done - (self.count - self.failed))
        return done - failed, failed

    def order(self, done: int) -> list[int]:
        """The order results come back in: request order, or shuffled (deterministically) when asked."""
        indexes = list(range(done))
        if self.shuffle:
            random.Random(f"{self.seed}/{done}").shuffle(indexes)
        return indexes

    # --- Gemini API -------------------------------------------------------------------------------------

    def _gemini_error(self, i: int) -> dict:
        code = self.code(i)
        return {"code": code, "message": _GEMINI_MESSAGES.get(code, f"Error {code}.")}

    def _gemini_response(self, i: int) -> dict:
        response: dict[str, Any] = {"candidates": [{"content": {"parts": [{"text": f"response {i + 1}"}],
                                                                "role": "model"}, "finishReason": "STOP"}]}
        meta = self.usage_metadata(i)
        if meta is not None:
            response["usageMetadata"] = meta
        response["modelVersion"] = "gemini-2.5-flash"
        return response

    def gemini_line(self, i: int) -> dict:
        """A responses-file line (``{"key", "response" | "error"}``)."""
        line: dict[str, Any] = {}
        key = self.key(i)
        if key is not None:
            line["key"] = key
        if self.fails(i):
            line["error"] = self._gemini_error(i)
        else:
            line["response"] = self._gemini_response(i)
        return line

    def gemini_inline(self, i: int) -> dict:
        """An inline response (``{"response" | "error", "metadata": {"key"}}``)."""
        item: dict[str, Any] = {"error": self._gemini_error(i)} if self.fails(i) else {
            "response": self._gemini_response(i)}
        key = self.key(i)
        if key is not None:
            item["metadata"] = {"key": key}
        return item

    def responses_file(self, done: int) -> Iterator[bytes]:
        """The responses file's bytes, in chunks of about 256 KiB."""
        buf: list[bytes] = []
        size = 0
        for i in self.order(done):
            line = json.dumps(self.gemini_line(i)).encode() + b"\n"
            buf.append(line)
            size += len(line)
            if size >= 256 * 1024:
                yield b"".join(buf)
                buf.clear()
                size = 0
        if buf:
            yield b"".join(buf)

    def input_file(self) -> Iterator[bytes]:
        """The input file's bytes (``{"key", "request"}`` lines)."""
        for i in range(self.count):
            line: dict[str, Any] = {"key": self.key(i), "request": self.request(i)}
            yield json.dumps(line).encode() + b"\n"

    def inline_requests(self) -> list[dict]:
        """The batch's ``inputConfig.requests.requests``."""
        out = []
        for i in range(self.count):
            item: dict[str, Any] = {"request": self.request(i)}
            if self.key(i) is not None:
                item["metadata"] = {"key": self.key(i)}
            out.append(item)
        return out

    # --- Vertex AI --------------------------------------------------------------------------------------

    def vertex_row(self, i: int, processed_time: str) -> dict:
        """A prediction row: the request echoed (with the nulls Vertex AI adds for unset fields)."""
        echoed = json.loads(json.dumps(self.request(i)))
        contents = echoed.get("contents") if isinstance(echoed, dict) else None
        for content in contents if isinstance(contents, list) else []:
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else []:
                if isinstance(part, dict):
                    part.setdefault("file_data", None)
        if self.fails(i):
            code = self.code(i)
            inner = {"error": {"code": code, "message": "Request contains an invalid argument." if code == 400
                               else f"Error {code}.", "status": GRPC_STATUS.get(code, "UNKNOWN")}}
            row: dict[str, Any] = {"status": f"{REASONS.get(code, 'Error')}: {json.dumps(inner)}",
                                   "processed_time": processed_time, "request": echoed}
            if self._failure_number(i) % 2 == 0:
                row["response"] = {}
            return row
        response: dict[str, Any] = {
            "candidates": [{"avgLogprobs": -0.25, "content": {"parts": [{"text": f"response {i + 1}"}],
                                                               "role": "model"}, "finishReason": "STOP"}],
            "modelVersion": "gemini-2.5-flash-001"}
        meta = self.usage_metadata(i)
        if meta is not None:
            response["usageMetadata"] = meta
        return {"status": "", "processed_time": processed_time, "request": echoed, "response": response}

    def vertex_shards(self, done: int, processed_time: str) -> list[tuple[str, bytes]]:
        """The prediction files of the first ``done`` requests: (name, bytes) per shard."""
        shards = min(self.shards, max(done, 1))
        out = []
        for k in range(shards):
            lo, hi = done * k // shards, done * (k + 1) // shards
            data = b"".join(json.dumps(self.vertex_row(i, processed_time)).encode() + b"\n" for i in range(lo, hi))
            name = "predictions.jsonl" if shards == 1 else f"predictions_{k + 1:05d}.jsonl"
            out.append((name, data))
        return out

