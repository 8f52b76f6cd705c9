"""A query's records decoded straight from Firestore's replies: the read the tick makes of every due
record, every tick.

``Query.stream()`` turns each document into a ``DocumentSnapshot`` (proto-plus wrappers, a document
reference, the library's value decoding, a deep copy of the data, and another in ``to_dict()``) before
the record is built: about 0.28 ms of CPU per record on the emulator, where the gRPC reply itself costs
0.02. ``stream_snapshots`` runs the same request as ``stream()`` and decodes each reply's document once,
into the typed record: about a third of the CPU. The values are the ones ``to_dict()`` gives:
``field_decoder`` decodes the kinds a record's fields hold (null, booleans, numbers, strings, timestamps,
maps) itself and hands everything else — arrays, bytes, references, geo points, and the maps that may
encode a vector or a BSON value (a key beginning ``__``) — to the library's ``_helpers``. Like
``stream()`` it resumes after the last document when the stream breaks on an error the library's policy
retries (see docs/benchmarks.md).

It leans on internals of google-cloud-firestore (pinned in requirements/): the request a query sends
(``Query._get_stream_iterator``), its resume rule (``_retry_query_after_exception``) and ``_helpers``;
tests/test_fast_stream.py holds its records equal to ``stream()``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .base import Snapshot
from .model import JobRecord

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud.firestore_v1.query import Query


def field_decoder(client: Any) -> Callable[[Any], dict[str, Any]]:
    """Decodes a document's (or a map value's) protobuf fields as ``DocumentSnapshot.to_dict()`` gives them."""
    from google.api_core.datetime_helpers import DatetimeWithNanoseconds
    from google.cloud.firestore_v1 import _helpers

    timestamp = DatetimeWithNanoseconds.from_timestamp_pb

    def decode(fields: Any) -> dict[str, Any]:
        if any(key.startswith("__") for key in fields):  # may encode a vector or a BSON value
            return _helpers.decode_dict(fields, client)  # type: ignore[return-value]
        out: dict[str, Any] = {}
        for key, value in fields.items():
            kind = value.WhichOneof("value_type")
            if kind == "string_value":
                out[key] = value.string_value
            elif kind == "null_value":
                out[key] = None
            elif kind == "integer_value":
                out[key] = value.integer_value
            elif kind == "boolean_value":
                out[key] = value.boolean_value
            elif kind == "timestamp_value":
                out[key] = timestamp(value.timestamp_value)
            elif kind == "map_value":
                out[key] = decode(value.map_value.fields)
            elif kind == "double_value":
                out[key] = value.double_value
            else:  # arrays, bytes, references, geo points: rare in a record, decoded by the library
                out[key] = _helpers.decode_value(value, client)
        return out

    return decode


def stream_snapshots(query: Query) -> Iterator[Snapshot]:
    """The records ``query`` returns, as ``stream()`` would give them (``snap_of``), in its order."""
    from google.api_core import exceptions as gexc
    from google.api_core.gapic_v1.method import DEFAULT
    from google.cloud.firestore_v1 import _helpers
    from google.cloud.firestore_v1.document import DocumentSnapshot
    from proto.datetime_helpers import DatetimeWithNanoseconds  # the type stream() gives update_time

    decode = field_decoder(query._client)
    replies, prefix = query._get_stream_iterator(None, DEFAULT, None)
    last: tuple[str, dict[str, Any]] | None = None
    while True:
        try:
            reply = next(replies, None)
        except gexc.GoogleAPICallError as exc:
            if not query._retry_query_after_exception(exc, DEFAULT, None):
                raise
            if last is not None:  # resume after the last record read, as stream() does
                doc_id, data = last
                after = DocumentSnapshot(query._parent.document(doc_id), data, exists=True, read_time=None,
                                         create_time=None, update_time=None)
                replies, _ = query.start_after(after)._get_stream_iterator(None, DEFAULT, None)
            else:
                replies, _ = query._get_stream_iterator(None, DEFAULT, None)
            continue
        if reply is None:
            return
        pb = reply._pb
        if not pb.HasField("document"):
            continue
        document = pb.document
        doc_id = _helpers.get_doc_id(document, prefix)
        data = decode(document.fields)
        last = doc_id, data
        update_time = DatetimeWithNanoseconds.from_timestamp_pb(document.update_time)
        yield Snapshot(doc_id, JobRecord.from_doc(data), update_time)
