"""A faithful batch-API simulator: one HTTP server speaking the Gemini API batches (v1beta) and the Vertex AI
batchPredictionJobs (v1) wire formats (see docs/wire.md), with scripted job timelines and injectable
latency and faults.

Run it with ``python -m devtools.simulator --port N [--host 127.0.0.1] [--latency-ms X] [--api-key K]
[--seed S]``. The server is written on raw ``asyncio`` (an ``asyncio.Protocol`` with a minimal HTTP/1.1
parser, keep-alive, Content-Length request bodies, Content-Length or chunked responses) so it costs little
CPU per request; latency is injected with ``loop.call_later``. Stdlib only; ``SimulatorClient`` (the admin
helper, in ``client``) uses httpx.

Modules, one per responsibility:

- ``wire``: what both APIs share on the wire (state names, error bodies, timestamps, reply framing)
- ``jobs``: a job's spec, scripted timeline, counts and when its outputs appear (``Job``)
- ``results``: what a batch holds (``Batch``): its requests, failures and usage, in every output and input format
- ``gemini``: Gemini API batches (rendering, API key, routes, ``batchGenerateContent``); ``vertex``: Vertex AI
  jobs (rendering, project numbers, routes, ``batchPredictionJobs.create``); ``lists``: list pages;
  ``listfilter``: the Vertex list ``filter``
- ``files``: responses files, input files, Files API uploads and their download; ``storage``: the storage
  emulator Vertex jobs write their prediction rows to; ``webhooks``: signed deliveries and registrations
- ``fieldmask``: partial responses (the ``fields`` system parameter)
- ``faults``: injected faults; ``admin``: the ``/_sim/`` API; ``app``: state, config, stats, routing
- ``server``: the asyncio HTTP/1.1 server and ``main``; ``client``: ``SimulatorClient``, ``gemini_spec``,
  ``vertex_spec`` (re-exported here)

Admin API (JSON in and out, never delayed, never faulted, not counted in stats):

- ``GET  /_sim/health`` -> ``{"ok": true}``
- ``POST /_sim/reset`` clears jobs, files, faults, stats; config goes back to the command-line values
- ``POST /_sim/config`` ``{"latency_ms", "api_key", "random_faults": {"rate", "kinds", "seed", "delay_s"},
  "project_numbers": {"proj-a": "123456"}, "list_page_max": {"gemini": 1000, "vertex": 1000},
  "storage_url": "http://127.0.0.1:4443", "create": {"gemini": {"timeline": [...]}, "vertex": {"timeline":
  [...]}, "fail_marker": "sim:fail"}}`` (keys left out are unchanged) -> the whole config. ``storage_url``: a
  storage emulator where Vertex jobs with a ``requests`` spec (or created with their input there) write their
  prediction rows when their outputs appear, and created Vertex jobs read their input. ``create``: the
  timelines batches created through the APIs walk (default PENDING, RUNNING, SUCCEEDED a poll apart), and the
  text whose presence in a created request makes it fail. ``project_numbers``: Vertex renders those
  projects' job names with the number (as the real API does) and answers under either form.
  ``list_page_max``: the largest page a list returns whatever ``pageSize`` asks for (without ``pageSize``:
  50 Gemini, 100 Vertex)
- ``POST /_sim/lists/faults`` ``{"api": "gemini"|"vertex", "faults": [{"kind", "count"}]}``: the next list
  pages of that API fail: ``429``/``500``/``503``/… (status), ``malformed`` (not JSON), ``wrong_shape``,
  ``no_names`` (items without names), ``foreign_names`` (items of another scope), ``endless`` (the same
  page again and again, always with a next page token)
- ``POST /_sim/lists/stale`` ``{"name", "count"}``: the job's next ``count`` list appearances show it as it
  was before its last change (an eventually consistent list)
- ``"webhooks": {"url", "secret", "ed25519", "delay_s", "jitter_s", "duplicates", "drop", "id_form",
  "attempts"}`` in ``/_sim/config``: signed Standard Webhooks deliveries when Gemini batches end (see
  ``Webhooks``); ``GET /_sim/webhooks/jwks.json`` publishes the Ed25519 key of ``v1a`` signatures. With
  webhooks on, Gemini batches end on their own time instead of when next looked at
- ``POST /_sim/jobs`` ``{"jobs": [spec, ...]}`` -> ``{"created": n}`` (all or nothing; a name that exists
  is replaced)
- ``POST /_sim/jobs/set`` ``{"name", "state", "stats"?, "error"?, "timeline"?}`` force a state now; the rest
  of the scripted timeline is dropped (or replaced by ``timeline``, whose steps follow from now)
- ``POST /_sim/jobs/faults`` ``{"name", "faults": [...]}`` append faults to a job
- ``POST /_sim/jobs/delete`` ``{"name"}``
- ``GET  /_sim/jobs/get?name=`` -> ``{"name", "api", "state", "polls", "step", "steps", "faults_left",
  "stats", "error", "gets"}`` (with the new output rules also ``"output_ready", "results", "written",
  "write_error"``)
- ``GET  /_sim/jobs/outputs?name=`` -> ``{"done", "output_ready", "files": {name: text}}``: what a job with a
  ``requests`` spec holds (Gemini ``responses.jsonl`` or ``inline.json`` and ``input.jsonl``; Vertex its
  prediction shards)
- ``GET  /_sim/stats`` -> ``{"requests", "status_gets", "by_code", "max_in_flight", "in_flight",
  "user_projects", "per_job_gets", "connections_opened", "connections_open", "list_pages", "list_filters",
  "creates"}`` (``creates``: batches made by each API's create call, per api);
  ``POST /_sim/stats/reset``
- ``GET  /_sim/config``

Job spec::

    {"name": "batches/abc" | "projects/p/locations/us-central1/batchPredictionJobs/123",
     "display_name": "...", "model": "...",
     "timeline": [{"state": "PENDING"},
                  {"state": "RUNNING", "after_polls": 1, "stats": {"successful": 1, "failed": 0,
                                                                   "incomplete": 9}},
                  {"state": "SUCCEEDED", "after_s": 2.5, "error": null}],
     "output": {"kind": "file", "file_id": "batch-abc", "lines": 100, "line_bytes": 200, "errors": 0,
                "chunked": false}
             | {"kind": "inline", "count": 5, "errors": 1, "response_bytes": 0}
             | {"kind": "gcs", "uri": "gs://bucket/prefix/prediction-model-..."}
             | {"kind": "bigquery", "table": "bq://proj.dataset.predictions_..."} | null,
     "faults": [{"kind": "429", "count": 2}, {"kind": "429", "retry_after": 1},
                {"kind": "500" | "503" | "404" | "403" | "malformed" | "garbage" | "slow" | "drop",
                 "count": n, "delay_s": 30}],
     "labels": {...}, "input": {...Vertex inputConfig}, "created_ago_s": 0,
     "requests": {"count": 10, "failed": 2, "error_codes": [3], "usage": {"prompt": 12, "candidates": 5,
                  "thoughts": 0, "cached": 0, "tool_use": 0}, "without_usage": 0, "without_total": 0,
                  "input": "file" | "inline" | "gone", "shuffle": false, "shards": 1, "finished": 0}}

``output.delay_s`` (new): the outputs appear that many seconds after the job ended (Gemini ``output`` and the
file download, Vertex ``outputInfo``), as a batch may report SUCCEEDED before its output pointer is there.
``requests`` (new; see ``results``): the batch's requests and what became of each — the outputs hold those
results (responses file or inline responses, Vertex prediction rows in shards), the counts follow them, a
Gemini batch's input is a downloadable file, its inline requests or a file that is gone; ``finished``
requests have results when the job ends CANCELLED, EXPIRED or FAILED (partial outputs). Jobs without these
fields behave as they always did.

Created through the APIs (new): ``POST /upload/v1beta/files`` (Files API, resumable: ``start``, then
``upload, finalize`` on the returned ``X-Goog-Upload-URL``), ``POST /v1beta/models/{model}:batchGenerateContent``
(over an uploaded file or inline requests; its results answer those requests, keys kept) and
``POST /v1/projects/{p}/locations/{l}/batchPredictionJobs`` (its rows echo the input read from the storage
emulator).

Lists: ``GET /v1beta/batches`` (Gemini, ``operations``) and ``GET /v1/{parent}/batchPredictionJobs``
(Vertex, ``batchPredictionJobs``) with ``pageSize``, ``pageToken``, ``readMask`` (Vertex: top-level fields
kept) and ``filter`` (Vertex; Gemini answers 400): the AIP-160 subset of ``compile_filter`` — ``AND``,
``OR`` (binding tighter, as in AIP-160), ``NOT``, parentheses, ``state`` = !=, ``create_time`` = != < <= >
>=, ``display_name`` = != and ``:`` wildcards, ``labels.k=v``, ``labels.k:*``.

``response_bytes`` (inline output): each successful inline response carries a second text part of that many
bytes, so a batch can hold hundreds of megabytes of inline responses (the memory tests).

Partial responses (``fieldmask``): the Gemini routes (batch GET and list) and the Vertex AI job GET honour
the ``fields`` system parameter, ``$fields`` and the ``X-Goog-FieldMask`` header: comma-separated dotted (or
``/``) paths with Google's ``a(b,c)`` nesting; a path through a list masks each element; a field the resource
does not have is refused with 400 ``INVALID_ARGUMENT``.

A step without ``after_polls``/``after_s`` takes effect after one poll. ``after_polls`` counts successful
status GETs of the job at the previous step (a faulted GET is not a poll); ``after_s`` counts from the
moment the previous step took effect. Transitions are evaluated lazily (status GET, list, admin get).
Result keys (inline and file) are ``req-1`` .. ``req-N``; the last ``errors`` of them are errors.
"""

from devtools.simulator.client import SimulatorClient, gemini_spec, vertex_spec

__all__ = ["SimulatorClient", "gemini_spec", "vertex_spec"]
