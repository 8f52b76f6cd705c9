"""What a job's outputs hold (A10): the line parsers of each row kind, the streaming accumulator and its
``results`` map, failed.jsonl and the Gemini key join, the price table and the cost arithmetic.

Pure code: plain unit tests, and property-based ones for hostile lines (whatever a line holds, nothing
raises and it is counted once)."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batch_relay.errors import PermanentError
from batch_relay.results import chunks, cost, lines, prices
from batch_relay.results.failed import FailedLines, GeminiJoin, key_digest
from batch_relay.results.lines import Outcome, Usage
from batch_relay.results.summary import TOP_ERRORS, ErrorCounts, ResultsReader, counts_summary, input_gone

QUICK = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64 = 2**63 - 1

# -- strategies -----------------------------------------------------------------------------------------------

hostile_text = st.one_of(st.text(max_size=20), st.sampled_from(["", " ", "\x00", "null", "9" * 30, "\ud800"]))
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(2**63 - 2, 2**70), st.floats(),
                   hostile_text)
json_any = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(hostile_text, inner, max_size=3), max_leaves=10)
usage_field = st.one_of(st.integers(-5, 10**6), st.integers(0, 10**6).map(str), json_any)
usage = st.fixed_dictionaries({}, optional={k: usage_field for k in (
    "promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "cachedContentTokenCount",
    "toolUsePromptTokenCount", "totalTokenCount")})
gemini_obj = st.one_of(
    st.fixed_dictionaries({"key": st.one_of(st.text(max_size=8), json_any),
                           "response": st.one_of(st.fixed_dictionaries({}, optional={"usageMetadata": usage}),
                                                 json_any)}),
    st.fixed_dictionaries({"key": st.one_of(st.text(max_size=8), json_any),
                           "error": st.one_of(st.fixed_dictionaries({}, optional={"code": json_any,
                                                                                  "message": json_any}), json_any)}),
    st.fixed_dictionaries({"metadata": st.one_of(st.fixed_dictionaries({"key": json_any}), json_any)},
                          optional={"response": json_any, "error": json_any}),
    json_any)
vertex_obj = st.one_of(
    st.fixed_dictionaries({"status": st.one_of(st.just(""), st.text(max_size=40), json_any),
                           "request": json_any},
                          optional={"response": st.one_of(st.fixed_dictionaries(
                              {"candidates": json_any}, optional={"usageMetadata": usage}), json_any),
                              "processed_time": json_any}),
    json_any)


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


def gemini_ok(key: str, **usage_fields: int) -> bytes:
    return dumps({"key": key, "response": {"candidates": [], "usageMetadata": usage_fields}})


def gemini_err(key: str | None, code: object = 3) -> bytes:
    line: dict[str, object] = {"error": {"code": code, "message": "Request contains an invalid argument."}}
    if key is not None:
        line["key"] = key
    return dumps(line)


def vertex_ok(text: str, **usage_fields: int) -> bytes:
    return dumps({"status": "", "processed_time": "2026-01-01T00:00:00.1+00:00",
                  "request": {"contents": [{"role": "user", "parts": [{"text": text}]}]},
                  "response": {"candidates": [], "modelVersion": "gemini-2.5-flash-001",
                               "usageMetadata": usage_fields}})


def vertex_failed(text: str | None, status: str = 'Bad Request: {"error": {"code": 400, "message": "bad", '
                                                   '"status": "INVALID_ARGUMENT"}}', response: object = None) -> bytes:
    row: dict[str, object] = {"status": status, "processed_time": "2026-01-01T00:00:00+00:00"}
    if text is not None:
        row["request"] = {"contents": [{"role": "user", "parts": [{"text": text, "file_data": None}]}]}
    if response is not None:
        row["response"] = response
    return dumps(row)


# -- the parsers -----------------------------------------------------------------------------------------------


def test_gemini_lines_of_each_kind():
    ok = lines.parse_gemini_line(gemini_ok("a", promptTokenCount=10, candidatesTokenCount=4, thoughtsTokenCount=2,
                                           cachedContentTokenCount=3, toolUsePromptTokenCount=1, totalTokenCount=17))
    assert ok == lines.Row(Outcome.SUCCEEDED, key="a", usage=Usage(10, 4, 2, 3, 1, 17))
    assert lines.parse_gemini_line(gemini_err("b", 3)) == lines.Row(Outcome.FAILED, key="b", error_code="3")
    assert lines.parse_gemini_line(gemini_err("c", "RESOURCE_EXHAUSTED")).error_code == "RESOURCE_EXHAUSTED"
    assert lines.parse_gemini_line(dumps({"key": "d", "error": {"status": "INTERNAL"}})).error_code == "INTERNAL"
    assert lines.parse_gemini_line(dumps({"key": "e", "error": "boom"})).error_code == "unknown"
    # the API's own inline shape: the key is in metadata
    inline = lines.gemini_row({"response": {"usageMetadata": {"promptTokenCount": "7"}}, "metadata": {"key": "f"}})
    assert inline.key == "f" and inline.usage == Usage(prompt=7, total=7)
    assert lines.parse_gemini_line(dumps({"key": "g", "response": {}})) == lines.Row(Outcome.SUCCEEDED, key="g")
    assert lines.parse_gemini_line(b"   \r") is lines.BLANK
    for bad in (b"not json", b"[1, 2]", b'{"key": "h"}', b'{"key": "h", "response": "text"}', b"\xff\xfe{",
                b"[" * 100_000, b"{}"):
        assert lines.parse_gemini_line(bad).outcome is Outcome.UNPARSED, bad[:20]


def test_usage_is_read_defensively():
    # totalTokenCount missing: the sum of its parts (prompt includes cached, so cached is not added again)
    assert lines.parse_usage({"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 2,
                              "toolUsePromptTokenCount": 1, "cachedContentTokenCount": 4}).total == 18
    # int64 as a string, negative, bool, float, absurd and non-numeric values: a string is read, the rest ignored
    got = lines.parse_usage({"promptTokenCount": "12", "candidatesTokenCount": -3, "thoughtsTokenCount": True,
                             "cachedContentTokenCount": 2.0, "totalTokenCount": 10**18})
    assert got == Usage(prompt=12, total=12)
    # cached can never exceed the prompt it is part of
    assert lines.parse_usage({"promptTokenCount": 5, "cachedContentTokenCount": 9}).cached == 5
    assert lines.parse_usage(None) is None and lines.parse_usage([1]) is None
    assert lines.parse_usage({}) == Usage()


def test_vertex_rows_of_each_kind():
    ok = lines.parse_vertex_row(vertex_ok("hi", promptTokenCount=8, candidatesTokenCount=2, totalTokenCount=10))
    assert ok == lines.Row(Outcome.SUCCEEDED, usage=Usage(prompt=8, candidates=2, total=10))
    # some successful rows carry no totalTokenCount: summed from the parts
    assert lines.parse_vertex_row(vertex_ok("hi", promptTokenCount=8, candidatesTokenCount=2)).usage.total == 10
    failed = lines.parse_vertex_row(vertex_failed("again"))
    assert failed.outcome is Outcome.FAILED and failed.error_code == "400"
    # the echoed request without the nulls Vertex AI adds for unset fields
    assert failed.request == {"contents": [{"role": "user", "parts": [{"text": "again"}]}]}
    assert lines.parse_vertex_row(vertex_failed("x", response={})).error_code == "400"
    assert lines.parse_vertex_row(vertex_failed("x", status="Internal: something broke")).error_code == "Internal"
    assert lines.parse_vertex_row(vertex_failed("x", status='Bad Request: {"error": {"status": "NOT_FOUND"}}')
                                  ).error_code == "NOT_FOUND"
    no_request = lines.parse_vertex_row(vertex_failed(None))
    assert no_request.outcome is Outcome.FAILED and no_request.request is None
    # an echoed request with neither a status nor a response did not succeed
    empty = lines.parse_vertex_row(dumps({"status": "", "request": {"contents": []}, "response": {}}))
    assert empty.outcome is Outcome.FAILED and empty.request == {"contents": []}
    assert lines.parse_vertex_row(dumps({"instance": {}, "prediction": {"x": 1}})).outcome is Outcome.SUCCEEDED
    for bad in (b"{}", b'{"status": 5}', b'{"status": "", "response": "x"}', b"\x80", b"7", b'"text"'):
        assert lines.parse_vertex_row(bad).outcome is Outcome.UNPARSED, bad


def test_error_codes_are_short_and_printable():
    assert lines.error_code(429) == "429"
    assert lines.error_code("Bad\nRequest\x00<script>") == "Bad Request script"
    assert len(lines.error_code("x" * 500)) == lines.CODE_MAX
    assert lines.error_code("") == lines.error_code(None) == lines.error_code(True) == lines.error_code(10**20) \
        == lines.error_code(["x"]) == "unknown"
    # Firestore refuses field names of the shape __x__ (the errors map is stored in the record)
    assert lines.error_code("__proto__") == "proto"
    assert lines.error_code("__ __") == lines.error_code("____") == "unknown"
    assert lines.error_code("__init") == "__init"


def test_prediction_files():
    assert lines.is_prediction_file("prediction-model-2026/predictions.jsonl")
    assert lines.is_prediction_file("predictions_00001.jsonl")
    assert not lines.is_prediction_file("errors_00001.jsonl")
    assert not lines.is_prediction_file("predictions.jsonl.tmp")


@QUICK
@given(st.binary(max_size=300))
@example(b"\xed\xa0\x80")
@example(b'{"key": "\\ud800", "error": {"code": 1}}')
def test_any_bytes_are_a_row_never_an_exception(data):
    for parse in (lines.parse_gemini_line, lines.parse_vertex_row):
        assert isinstance(parse(data).outcome, Outcome)


@QUICK
@given(gemini_obj, vertex_obj)
def test_any_json_is_a_row_never_an_exception(gemini, vertex):
    for parse, obj in ((lines.parse_gemini_line, gemini), (lines.parse_vertex_row, vertex)):
        row = parse(json.dumps(obj).encode())
        assert row.outcome is not Outcome.BLANK
        if row.usage is not None:
            assert all(0 <= getattr(row.usage, f) <= 4 * lines.MAX_COUNT for f in Usage.__slots__)
        if row.error_code is not None:
            assert re.fullmatch(r"[A-Za-z0-9 _.-]{1,64}", row.error_code)
            assert not re.fullmatch(r"__.*__", row.error_code)


@QUICK
@given(st.lists(st.one_of(gemini_obj.map(json.dumps).map(str.encode), st.binary(max_size=40)), max_size=20),
       st.sampled_from(["gemini", "vertex"]))
def test_the_reader_counts_every_line_once(batch, api):
    reader = ResultsReader(api)
    for line in batch:
        reader.feed(line.replace(b"\n", b" "))
    summary = reader.finish()
    non_blank = sum(1 for line in batch if line.replace(b"\n", b" ").strip())
    assert summary.succeeded + summary.failed + summary.unparsed == non_blank == summary.requests
    assert sum(summary.errors.values()) == summary.failed
    results = summary.to_dict()
    json.dumps(results)  # a plain JSON document
    assert all(0 <= v <= INT64 for v in results["usage"].values())


# -- lines from chunks --------------------------------------------------------------------------------------------


@QUICK
@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=12), st.data())
def test_lines_survive_any_chunking(parts, data):
    blob = b"\n".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=6)))
    splitter = chunks.LineSplitter(max_line=1000)
    got: list[bytes] = []
    for lo, hi in zip([0, *cuts], [*cuts, len(blob)], strict=True):
        got += splitter.feed(blob[lo:hi])
    got += splitter.end()
    expected = blob.split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()
    assert got == expected


plain_usage = st.fixed_dictionaries({}, optional={k: st.one_of(st.integers(0, 10**6), st.integers(-3, 3),
                                                                 st.sampled_from([lines.MAX_COUNT, 10**16, 250_000]))
                                                for k in ("promptTokenCount", "candidatesTokenCount",
                                                          "thoughtsTokenCount", "cachedContentTokenCount",
                                                          "toolUsePromptTokenCount", "totalTokenCount")})
typical = st.one_of(  # the lines the fast path takes (successes with integer counts), and their near misses
    st.builds(lambda k, u: {"key": k, "response": {"candidates": [], "usageMetadata": u}}, st.text(max_size=5),
              plain_usage),
    st.builds(lambda s, u: {"status": s, "request": {"contents": []}, "response": {"usageMetadata": u}},
              st.sampled_from(["", " ", "\t", None, "Bad Request: x", 0]), plain_usage),
    st.builds(lambda u: {"key": "k", "error": None, "response": {"usageMetadata": u}}, usage))
any_line = st.one_of(
    typical.map(dumps), gemini_obj.map(dumps), vertex_obj.map(dumps),
    st.one_of(typical, gemini_obj, vertex_obj).map(  # raw UTF-8, lone surrogates too
        lambda o: json.dumps(o, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    typical.map(lambda o: json.dumps(o).encode("utf-16-le")),  # json.loads guesses UTF-16 from the NULs
    st.binary(max_size=30), st.binary(max_size=20).map(lambda b: b"{" + b),
    st.sampled_from([b"", b"  ", b"\t\r", b"{}", b"[]", b"null", b'{"a":' + b"[" * 5000, b"\xef\xbb\xbf{}"]))


class _NoCuts:  # st.data() for an @example: the lines as they are, in one chunk
    def draw(self, strategy: object) -> object:
        return b"" if "sampled_from" in repr(strategy) else []


@settings(QUICK, max_examples=500)
@given(st.lists(any_line, max_size=25), st.sampled_from(["gemini", "vertex"]), st.booleans(),
       st.sampled_from([chunks.MAX_LINE, 40]), st.data())
@example([dumps({"status": "Bad Request: x", "request": {}, "response": {"usageMetadata": {"promptTokenCount": 3}}}),
          dumps({"status": " ", "request": {}, "response": {"usageMetadata": {"promptTokenCount": 3}}})],
         "vertex", False, chunks.MAX_LINE, _NoCuts())
@example([gemini_ok("a", promptTokenCount=3), gemini_ok("b", promptTokenCount=300_000, cachedContentTokenCount=9**9),
          dumps({"key": "c", "response": {"usageMetadata": {"totalTokenCount": -1, "candidatesTokenCount": 2}}})],
         "gemini", False, chunks.MAX_LINE, _NoCuts())
@example([gemini_ok("a", promptTokenCount=3)], "gemini", True, chunks.MAX_LINE, _NoCuts())
def test_the_streamed_pass_counts_as_the_parsers_do(batch, api, track, max_line, data):
    """The fast pass over chunks (``feed_chunk``) gives the Summary of parsing each line with the reference
    parser (``parse_gemini_line``/``parse_vertex_row``), whatever the lines hold and however they are cut."""
    batch = [line.replace(b"\n", b" ") for line in batch]
    blob = b"\n".join(batch) + data.draw(st.sampled_from([b"", b"\n"]))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=8)))
    streamed = ResultsReader(api, track_unfinished=track, max_line=max_line)
    for lo, hi in zip([0, *cuts], [*cuts, len(blob)], strict=True):
        streamed.feed_chunk(blob[lo:hi])
    streamed.end_file()
    reference = ResultsReader(api, track_unfinished=track, max_line=max_line)
    parse = lines.parse_gemini_line if api == "gemini" else lines.parse_vertex_row
    for line in batch:
        reference.feed_row(lines.UNPARSED if len(line) > max_line else parse(line))
    got, want = streamed.finish(), reference.finish()
    assert got == want
    assert list(got.errors.items()) == list(want.errors.items())  # the same order (ties: the code first seen)
    # the keys of successes kept to find unfinished requests in the input (the join reads them, not the Summary)
    assert streamed._succeeded_keys == reference._succeeded_keys
    streamed.failed_lines.close()
    reference.failed_lines.close()


def test_a_line_too_long_is_reported_once_and_not_kept():
    splitter = chunks.LineSplitter(max_line=10)
    got = [*splitter.feed(b"short\n" + b"x" * 8), *splitter.feed(b"y" * 50), *splitter.feed(b"z\nafter\n" + b"q" * 30),
           *splitter.end()]
    assert got == [b"short", chunks.TOO_LONG, b"after", chunks.TOO_LONG]
    assert lines.parse_gemini_line(chunks.TOO_LONG).outcome is Outcome.UNPARSED


# -- the accumulator -------------------------------------------------------------------------------------------


def test_usage_is_summed_exactly_and_long_prompts_apart():
    reader = ResultsReader("gemini")
    reader.feed_chunk(gemini_ok("a", promptTokenCount=100, candidatesTokenCount=10, totalTokenCount=110) + b"\n"
                      + gemini_ok("b", promptTokenCount=250_000, cachedContentTokenCount=50_000,
                                  candidatesTokenCount=7, thoughtsTokenCount=3, totalTokenCount=250_010)
                      + b"\n" + dumps({"key": "c", "response": {"candidates": []}}))
    summary = reader.finish()
    assert summary.usage == Usage(prompt=250_100, candidates=17, thoughts=3, cached=50_000, total=250_120)
    assert summary.usage_long == Usage(prompt=250_000, candidates=7, thoughts=3, cached=50_000, total=250_010)
    assert summary.to_dict()["usage"] == {
        "prompt_tokens": 250_100, "candidates_tokens": 17, "thoughts_tokens": 3, "cached_tokens": 50_000,
        "tool_use_prompt_tokens": 0, "total_tokens": 250_120, "rows_without_usage": 1}
    assert (summary.requests, summary.succeeded, summary.failed, summary.missing) == (3, 3, 0, 0)


def test_errors_map_keeps_the_top_twenty_and_other():
    counts = ErrorCounts()
    for code in range(30):
        for _ in range(code + 1):
            counts.add(str(code))
    top = counts.top()
    assert len(top) == TOP_ERRORS + 1 and top["29"] == 30 and "9" not in top
    assert top["other"] == sum(range(1, 11))  # codes 0..9, once to ten times
    assert sum(top.values()) == sum(range(1, 31))
    bounded = ErrorCounts(tracked=3)
    for code in "abcdde":
        bounded.add(code)
    assert bounded.top() == {"a": 1, "b": 1, "c": 1, "other": 3}  # d, d and e came after three codes


def test_gemini_failed_requests_joined_by_key_never_position():
    reader = ResultsReader("gemini", declared_requests=4)
    # responses in another order than the requests, one key failing twice (duplicate keys in the input)
    for line in (gemini_err("k3", 13), gemini_ok("k2"), gemini_err("k1"), gemini_err("k3", 13)):
        reader.feed(line)
    assert reader.needs_input
    reader.feed_input_chunk(b'{"key": "k1", "request": {"n": 1}}\n{"key": "k2", "request": {"n": 2}}\n')
    reader.feed_input_chunk(b'{"key": "k3", "request": {"n": 3}}\n{"key": "k3", "request": {"n": 4}}')
    summary = reader.finish()
    assert [json.loads(line) for line in reader.failed_lines.getvalue().splitlines()] == [
        {"key": "k1", "request": {"n": 1}}, {"key": "k3", "request": {"n": 3}}, {"key": "k3", "request": {"n": 4}}]
    assert (summary.failed, summary.missing, summary.failed_lines, summary.missing_reason) == (3, 0, 3, None)
    assert summary.errors == {"13": 2, "3": 1}


def test_gemini_inline_requests_and_keys_the_input_lacks():
    reader = ResultsReader("gemini")
    reader.feed_inline({"error": {"code": 3}, "metadata": {"key": "a"}})
    reader.feed_inline({"error": {"code": 3}, "metadata": {"key": "ghost"}})
    reader.feed_inline({"error": {"code": 3}})  # no key: cannot be joined
    reader.feed_inline({"response": {}, "metadata": {"key": "b"}})
    for item in ({"request": {"x": "a"}, "metadata": {"key": "a"}}, {"request": {"x": "b"}, "metadata": {"key": "b"}},
                 {"request": {"x": "?"}}):
        reader.feed_inline_request(item)
    summary = reader.finish()
    assert reader.failed_lines.getvalue() == b'{"key":"a","request":{"x":"a"}}\n'
    assert summary.missing == 2
    assert summary.missing_reason == ("1 failed keys are not in the batch's input; 1 input lines have no key or "
                                      "request; 1 failed lines have no key")


def test_gemini_input_gone_makes_failures_missing_and_says_why():
    reader = ResultsReader("gemini")
    reader.feed(gemini_err("a"))
    reader.feed(gemini_ok("b"))
    reader.input_unavailable(input_gone("files/in-1", "HTTP 404: File files/in-1 not found."))
    summary = reader.finish()
    assert (summary.failed, summary.missing, summary.failed_lines) == (1, 1, 0)
    assert summary.missing_reason == ("the batch's input file files/in-1 could not be read (HTTP 404: File "
                                      "files/in-1 not found.); the Files API keeps files for 48 hours")
    assert reader.failed_lines.getvalue() == b""


def test_gemini_unfinished_requests_are_found_in_the_input():
    reader = ResultsReader("gemini", declared_requests=4, track_unfinished=True)
    reader.feed(gemini_ok("a"))
    reader.feed(gemini_err("b"))
    for key in "abcd":
        reader.feed_input_line(dumps({"key": key, "request": {"k": key}}))
    summary = reader.finish()
    assert [json.loads(x)["key"] for x in reader.failed_lines.getvalue().splitlines()] == ["b", "c", "d"]
    assert (summary.requests, summary.unfinished, summary.missing, summary.missing_reason) == (4, 2, 0, None)


def test_gemini_unfinished_requests_not_looked_for_are_missing():
    reader = ResultsReader("gemini", declared_requests=5)
    reader.feed(gemini_ok("a"))
    summary = reader.finish()
    assert (summary.unfinished, summary.missing) == (4, 4)
    assert summary.missing_reason == "4 requests have no result and were not looked for in the batch's input"
    assert not reader.needs_input


def test_vertex_failed_rows_become_failed_lines_as_they_are_read():
    reader = ResultsReader("vertex", declared_requests=6)
    reader.feed_chunk(b"\n".join([vertex_ok("1", promptTokenCount=3, candidatesTokenCount=1),
                                  vertex_failed("2"), vertex_failed(None, status="Internal: x"), b"oops"]) + b"\n")
    reader.end_file()
    assert reader.failed_lines.count == 1 and not reader.needs_input  # written as the row was read
    reader.feed_chunk(vertex_failed("3", response={}))  # a second shard, without a trailing newline
    summary = reader.finish()  # its last line is read at the end
    assert [json.loads(x) for x in reader.failed_lines.getvalue().splitlines()] == [
        {"request": {"contents": [{"role": "user", "parts": [{"text": "2"}]}]}},
        {"request": {"contents": [{"role": "user", "parts": [{"text": "3"}]}]}}]
    assert (summary.requests, summary.succeeded, summary.failed, summary.unparsed) == (6, 1, 3, 1)
    assert (summary.unfinished, summary.missing) == (1, 2)
    assert summary.missing_reason == ("1 failed rows echo no request; 1 requests have no result and cannot be "
                                      "matched to the input (Vertex AI rows carry no key)")
    assert summary.errors == {"400": 2, "Internal": 1}
    results = summary.to_dict(cost=None, failed_uri="gs://out/x/failed.jsonl")
    assert results["failed_uri"] == "gs://out/x/failed.jsonl" and results["cost"] is None


def test_bigquery_results_come_from_the_job_counts():
    summary = counts_summary("vertex", {"successful": 7, "failed": 2, "incomplete": None})
    results = summary.to_dict()
    assert (results["requests"], results["succeeded"], results["failed"], results["missing"]) == (9, 7, 2, 2)
    assert results["usage"] is None and results["unparsed"] == 0 and "BigQuery" in results["missing_reason"]


def test_failed_lines_spill_to_a_file_and_come_back_whole():
    with FailedLines(spool_bytes=64) as out:
        for i in range(100):
            out.add({"key": f"k{i}", "request": {"text": "é" * 10}})
        data = out.getvalue()
        assert out.count == 100 and out.size == len(data)
        assert b"".join(asyncio.run(_collect(out))) == data
        assert b"".join(out.chunks(7)) == data
    assert json.loads(data.splitlines()[99]) == {"key": "k99", "request": {"text": "é" * 10}}


async def _collect(out: FailedLines) -> list[bytes]:
    return [piece async for piece in out.aiter_chunks(100)]


def test_a_key_with_a_lone_surrogate_is_joined_and_written():
    out = FailedLines()
    join = GeminiJoin(__import__("collections").Counter({key_digest("\ud800"): 1}), None, out)
    join.feed_input_line(b'{"key": "\\ud800", "request": {}}')
    assert join.failed_written == 1 and json.loads(out.getvalue()) == {"key": "\ud800", "request": {}}


# -- prices and cost -----------------------------------------------------------------------------------------


def test_the_shipped_table_is_dated_sourced_and_complete():
    table = prices.shipped_table()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.version)
    raw = json.loads((prices.Path(prices.__file__).parent / "prices.json").read_text())
    assert all(url.startswith("https://") for urls in raw["sources"].values() for url in urls)
    for model in ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash"):
        for api in ("gemini", "vertex"):
            found = table.lookup(api, model)
            assert found is not None and found.batch_discount == Decimal("0.5") and not found.cached_batch_discount
            assert found.rates.cached_input < found.rates.input < found.rates.output
    assert table.lookup("gemini", "gemini-2.5-pro").above_200k is not None


@pytest.mark.parametrize(("model", "found"), [
    ("models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("publishers/google/models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro@001", "gemini-2.5-pro"),
    ("gemini-2.0-flash-001", "gemini-2.0-flash"),
    ("Gemini-2.5-Flash-Lite", "gemini-2.5-flash-lite"),
    ("models/gemini-2.5-flash-preview-09-2025", None),
    ("publishers/anthropic/models/claude", None),
    ("projects/p/locations/l/endpoints/123", None),
    ("tunedModels/abc", None),
    ("", None),
    (None, None),
])
def test_models_are_found_by_their_id_never_guessed(model, found):
    hit = prices.shipped_table().lookup("gemini", model)
    assert (hit.model if hit else None) == found


def _usage_summary(api: str, *usages: Usage):
    reader = ResultsReader(api)
    for u in usages:
        reader.feed(dumps({"key": "k", "status": "", "response": {"usageMetadata": {
            "promptTokenCount": u.prompt, "candidatesTokenCount": u.candidates, "thoughtsTokenCount": u.thoughts,
            "cachedContentTokenCount": u.cached, "toolUsePromptTokenCount": u.tool_use_prompt}}}))
    return reader.finish()


def test_cost_at_batch_prices_thoughts_as_output_cache_not_stacked():
    # gemini-2.5-flash: input 0.30, output 2.50, cached 0.03 per million; batch: half, not on cached input
    summary = _usage_summary("gemini", Usage(prompt=1_000_000, cached=200_000, candidates=300_000, thoughts=100_000,
                                             tool_use_prompt=10_000))
    got = cost.estimate(summary, prices.shipped_table(), "models/gemini-2.5-flash")
    # uncached 810,000 × 0.15 + output 400,000 × 1.25 + cached 200,000 × 0.03, per million
    assert got == {"amount": 0.1215 + 0.5 + 0.006, "currency": "USD", "model": "gemini-2.5-flash",
                   "prices": prices.shipped_table().version}
    assert cost.amount(summary.usage, summary.usage_long, prices.shipped_table().lookup("gemini", "gemini-2.5-flash")
                       ) == Decimal("0.627500")


def test_cost_of_long_prompts_at_the_higher_tier():
    summary = _usage_summary("vertex", Usage(prompt=300_000, candidates=1_000), Usage(prompt=100_000, candidates=1_000))
    got = cost.amount(summary.usage, summary.usage_long, prices.shipped_table().lookup("vertex", "gemini-2.5-pro"))
    # long: 300,000 × 2.50/2 + 1,000 × 15/2; base: 100,000 × 1.25/2 + 1,000 × 10/2 (per million)
    assert got == Decimal("0.375") + Decimal("0.0075") + Decimal("0.0625") + Decimal("0.005")


def test_cost_is_rounded_half_even_to_micro_dollars():
    table = prices.parse_table(json.dumps(_table(input="0.000001", output="0.000003", cached="0")), source="t")
    tiny = _usage_summary("gemini", Usage(prompt=1, candidates=1))
    assert cost.estimate(tiny, table, "m")["amount"] == 0.0
    big = _usage_summary("gemini", Usage(prompt=10**12, candidates=0))
    assert cost.estimate(big, table, "m")["amount"] == 0.5  # 10^12 × 0.000001 / 2 / 10^6


def test_discounts_stack_where_the_table_says_so_and_unknown_models_cost_nothing():
    table = prices.parse_table(json.dumps(_table(input="1", output="2", cached="0.1", stacks=True)), source="t")
    summary = _usage_summary("gemini", Usage(prompt=1_000_000, cached=1_000_000))
    assert cost.estimate(summary, table, "m")["amount"] == 0.05
    assert cost.estimate(summary, table, "gemini-9-ultra") is None
    assert cost.estimate(counts_summary("vertex", None), table, "m") is None  # BigQuery: no usage read


def _table(*, input: str, output: str, cached: str, stacks: bool = False) -> dict:
    rates = {"input": input, "output": output, "cached_input": cached}
    terms = {"batch_discount": "0.5", "cached_batch_discount": stacks}
    return {"version": "test-1", "apis": {"gemini": terms, "vertex": terms},
            "models": {"m": {"gemini": rates, "vertex": rates}}}


@pytest.mark.parametrize(("table", "message"), [
    ("{", "not JSON"),
    ("[]", "JSON object"),
    (json.dumps({**_table(input="1", output="1", cached="1"), "version": ""}), "version"),
    (json.dumps({**_table(input="-1", output="1", cached="1")}), "models.m.gemini.input"),
    (json.dumps({**_table(input="x", output="1", cached="1")}), "must be a number"),
    (json.dumps({**_table(input="1", output="1", cached="1"), "currency": "EUR"}), "USD"),
    (json.dumps({**_table(input="1", output="1", cached="1"), "models": {"M!": {}}}), "model id"),
    (json.dumps({**_table(input="1", output="1", cached="1"), "models": {"m": {"gemini": {"input": 1}}}}),
     "lacks output, cached_input"),
    (json.dumps({**_table(input="1", output="1", cached="1"), "models": {"m": {"aliases": ["m"], "gemini": {
        "input": 1, "output": 1, "cached_input": 1}}}}), "aliases"),
    (json.dumps({"version": "v", "apis": {"gemini": {"batch_discount": 2}}, "models": {}}), "batch_discount"),
])
def test_a_bad_table_is_refused_naming_its_source(table, message):
    with pytest.raises(prices.PricesError, match=re.escape(message)) as info:
        prices.parse_table(table, source="gs://tables/p.json")
    assert "gs://tables/p.json" in str(info.value)
    assert isinstance(info.value, PermanentError) and info.value.kind == "bad_prices"


def test_relay_prices_overrides_the_shipped_table(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(_table(input="4", output="8", cached="1")))
    assert asyncio.run(prices.load_table(None)) is prices.shipped_table()
    assert asyncio.run(prices.load_table(str(path))).version == "test-1"

    async def read_object(bucket: str, name: str) -> bytes:
        assert (bucket, name) == ("price-tables", "batch/prices.json")
        return path.read_bytes()

    table = asyncio.run(prices.load_table("gs://price-tables/batch/prices.json", read_object=read_object))
    assert table.lookup("vertex", "m").rates.output == Decimal(8) and table.source.startswith("gs://")
    with pytest.raises(prices.PricesError, match="no Cloud Storage client"):
        asyncio.run(prices.load_table("gs://price-tables/batch/prices.json"))
    with pytest.raises(prices.PricesError, match="cannot be read"):
        asyncio.run(prices.load_table(str(tmp_path / "absent.json")))


@QUICK
@given(st.lists(st.one_of(st.binary(max_size=60), json_any.map(json.dumps).map(str.encode),
                          st.fixed_dictionaries({"key": st.text(max_size=4), "request": json_any}).map(
                              json.dumps).map(str.encode)), max_size=15))
def test_any_input_lines_join_without_an_exception(inputs):
    reader = ResultsReader("gemini", track_unfinished=True)
    reader.feed(gemini_err(""))
    reader.feed(gemini_ok("a"))
    for line in inputs:
        reader.feed_input_chunk(line + b"\n")
    summary = reader.finish()
    assert summary.failed_lines == reader.failed_lines.count == len(reader.failed_lines.getvalue().splitlines())
    assert summary.missing >= 0


def test_a_request_too_deep_to_write_again_is_missing_not_a_crash():
    deep: object = {}
    for _ in range(5000):
        deep = {"x": deep}
    out = FailedLines()
    assert out.add({"request": deep}) is False and out.count == 0
    reader = ResultsReader("vertex")
    reader.feed_row(lines.Row(Outcome.FAILED, error_code="400", request=deep))  # as if a row held it
    summary = reader.finish()
    assert (summary.failed, summary.missing, summary.failed_lines) == (1, 1, 0)
    assert summary.missing_reason == "1 failed requests cannot be written as JSON"


def test_the_input_is_needed_only_when_something_is_to_be_found_there():
    assert not ResultsReader("vertex", track_unfinished=True).needs_input
    complete = ResultsReader("gemini", declared_requests=1, track_unfinished=True)
    complete.feed(gemini_ok("a"))
    assert not complete.needs_input  # every request has its result
    short = ResultsReader("gemini", declared_requests=2, track_unfinished=True)
    short.feed(gemini_ok("a"))
    assert short.needs_input


@pytest.mark.parametrize("api", ["gemini", "vertex"])
def test_memory_does_not_grow_with_the_outputs(api):
    """Ten times the lines, the same peak: only failed requests (none here) and the bounded maps are kept."""
    import tracemalloc

    line = (gemini_ok("k", promptTokenCount=5, candidatesTokenCount=2) if api == "gemini"
            else vertex_ok("hello", promptTokenCount=5, candidatesTokenCount=2)) + b"\n"

    def peak(lines_count: int) -> int:
        blob = line * 1000
        reader = ResultsReader(api)
        tracemalloc.start()
        for _ in range(lines_count // 1000):
            for start in range(0, len(blob), 65536):
                reader.feed_chunk(blob[start:start + 65536])
        summary = reader.finish()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert summary.succeeded == lines_count
        return top

    small, large = peak(10_000), peak(100_000)
    assert large < small * 1.5 + 64 * 1024, (small, large)
