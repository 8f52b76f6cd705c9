"""``batchapi.jsonstream``: the elements of an array inside a JSON document, read as the bytes arrive, are
exactly what ``json.loads`` finds there, however the body is cut; and ``batchapi.fields``'s mask parser."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_relay.batchapi.jsonstream import ArrayStream, JsonStreamError, iter_array

PATH = ("metadata", "output", "inlinedResponses", "inlinedResponses")

_text = st.text(alphabet=st.sampled_from('ab"\\[]{},:\n\t é😀\x00\u2028'), max_size=12)
_scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | \
    st.floats(allow_nan=False, allow_infinity=False) | _text
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                     max_leaves=12)


def _body(items: list, noise: dict, ensure_ascii: bool) -> bytes:
    doc = {"name": "batches/x", "noise": noise,
           "metadata": {"before": noise, "output": {"inlinedResponses": {"inlinedResponses": items}}, "after": noise},
           "response": {"inlinedResponses": {"inlinedResponses": [noise, noise]}}}
    return json.dumps(doc, ensure_ascii=ensure_ascii).encode()


def _cut(body: bytes, size: int) -> list[bytes]:
    return [body[i:i + size] for i in range(0, len(body), size)]


@settings(max_examples=150, deadline=None)
@given(items=st.lists(_json, max_size=6), noise=st.dictionaries(_text, _json, max_size=3), ascii_=st.booleans(),
       size=st.integers(1, 64))
def test_elements_are_what_json_loads_finds_whatever_the_chunks(items, noise, ascii_, size):
    body = _body(items, noise, ascii_)
    expected = json.loads(body)["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    paths = [PATH, ("response", "inlinedResponses", "inlinedResponses")]
    assert list(iter_array(_cut(body, size), paths)) == expected  # the second copy is dropped


def test_every_cut_of_a_body_with_brackets_and_escapes_in_strings():
    items = [{"response": {"text": 'a "quoted" ] } [ { , : \\ \\" \u00e9 😀'}, "metadata": {"key": "k]1"}},
             12345678901234567890, -0.5e-3, "tail\\", [], {}, None, True]
    body = _body(items, {"k": '"]}'}, ensure_ascii=False)
    for at in range(1, len(body)):  # a chunk boundary at every byte, even inside a UTF-8 sequence
        assert list(iter_array([body[:at], body[at:]], [PATH])) == items
    assert list(iter_array([bytes([b]) for b in body], [PATH])) == items


def test_a_number_cut_at_the_end_of_a_chunk_is_not_taken_early():
    stream = ArrayStream([("a",)])
    assert stream.feed(b'{"a": [12') == []
    assert stream.feed(b"34, 0") == [1234]
    assert stream.feed(b".5e1]}") == [5.0]
    assert stream.close() == []


def test_no_array_null_and_where_it_is_found():
    assert list(iter_array([b'{"a": {"b": 1}}'], [("a", "c")])) == []
    assert list(iter_array([b'{"a": null}'], [("a",)])) == []
    stream = ArrayStream([("x",), ("y",)])
    assert stream.feed(b'{"y": [1], "x": [2]}') == [1]
    assert stream.close() == [] and stream.found == ("y",)


@pytest.mark.parametrize("body", [b'{"a": [1, 2', b'{"a": [1 2]}', b'{"a": [1]} x', b'{"a": "s"}', b"", b'{"a": [tru]}',
                                  b'{"a": [1]}\xff', b'{"a": [1], }'])
def test_bodies_that_are_not_one_json_document_are_refused(body):
    with pytest.raises(JsonStreamError):
        list(iter_array([body], [("a",)]))


def test_a_value_longer_than_the_bound_is_refused_without_reading_on():
    stream = ArrayStream([("a",)], max_value=100)
    stream.feed(b'{"a": ["' + b"x" * 90)
    with pytest.raises(JsonStreamError, match="longer than 100"):
        for _ in range(10):
            stream.feed(b"x" * 100)


# -- the simulator's field masks (devtools.simulator.fieldmask) and the relay's (batchapi.fields) -----------------

def test_mask_paths_dots_slashes_and_google_nesting_give_the_same_tree():
    from devtools.simulator.fieldmask import parse

    nested = parse("name,metadata(state,output(responsesFile,inlinedResponses/inlinedResponses(metadata)))")
    dotted = parse("name,metadata.state,metadata.output.responsesFile,"
                   "metadata.output.inlinedResponses.inlinedResponses.metadata")
    assert nested == dotted == {"name": None, "metadata": {"state": None, "output": {
        "responsesFile": None, "inlinedResponses": {"inlinedResponses": {"metadata": None}}}}}
    assert parse("a.b,a") == parse("a,a.b") == {"a": None}  # a whole field wins over its parts


@pytest.mark.parametrize("text", ["", "a,,b", "a(b", "a(b))", "a.", "(a)", "a(b)c"])
def test_bad_mask_syntax_is_refused(text):
    from devtools.simulator.fieldmask import MaskError, parse

    with pytest.raises(MaskError):
        parse(text)


def test_a_mask_keeps_its_fields_masks_each_element_of_a_list_and_refuses_unknown_fields():
    from devtools.simulator.fieldmask import GEMINI_BATCH, MaskError, apply, check, parse

    reply = {"name": "batches/b", "done": True, "metadata": {"state": "BATCH_STATE_SUCCEEDED", "output": {
        "inlinedResponses": {"inlinedResponses": [{"response": {"x": 1}, "metadata": {"key": "a"}}, {"error": {}}]}}}}
    tree = parse("name,metadata(state,output.inlinedResponses.inlinedResponses.metadata),metadata.endTime")
    check(tree, GEMINI_BATCH)
    assert apply(tree, reply) == {"name": "batches/b", "metadata": {"state": "BATCH_STATE_SUCCEEDED", "output": {
        "inlinedResponses": {"inlinedResponses": [{"metadata": {"key": "a"}}, {}]}}}}  # the count is kept
    check(parse("metadata.output.inlinedResponses.inlinedResponses.response.anything.below"), GEMINI_BATCH)
    for unknown in ("metadata.startTime", "nope", "name.inner", "metadata.output.bogus"):
        with pytest.raises(MaskError, match="Invalid field mask path"):
            check(parse(unknown), GEMINI_BATCH)


def test_the_relays_masks_are_fields_the_gemini_api_has():
    from batch_relay.batchapi import fields
    from devtools.simulator.fieldmask import GEMINI_BATCH, GEMINI_LIST, VERTEX_JOB, check, parse

    for mask in (fields.GEMINI_STATUS, fields.GEMINI_COPY, *map(fields.inline_fields, fields.INLINE_PATHS)):
        check(parse(mask), GEMINI_BATCH)
    check(parse(fields.GEMINI_LIST), GEMINI_LIST)
    check(parse(fields.VERTEX_STATUS), VERTEX_JOB)
    for mask in (fields.GEMINI_STATUS, fields.GEMINI_COPY):  # of each inline response only its metadata
        tree = parse(mask)
        assert tree["metadata"]["output"]["inlinedResponses"]["inlinedResponses"] == {"metadata": None}
        assert tree["response"]["inlinedResponses"]["inlinedResponses"] == {"metadata": None}
    assert fields.inline_path({"response": {"inlinedResponses": {"inlinedResponses": []}}}) == fields.INLINE_PATHS[1]
    assert fields.inline_path({"metadata": {"output": {}}}) == fields.INLINE_PATHS[0]
