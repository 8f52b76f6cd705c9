"""The simulator's reach into a Cloud Storage emulator (``"storage_url"`` in ``/_sim/config``, e.g.
fake-gcs-server on loopback): Vertex AI jobs write their prediction files there when their outputs appear,
and jobs created through ``batchPredictionJobs.create`` read their input from there. Stdlib only
(``http.client``), synchronous and short: the emulator answers in milliseconds."""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote, urlsplit

TIMEOUT_S = 10.0


class StorageError(Exception):
    pass


def split(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    if not uri.startswith("gs://"):
        raise StorageError(f"{uri!r} is not a gs:// URI")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


def _request(base: str, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    parts = urlsplit(base)
    if parts.scheme != "http" or not parts.hostname:
        raise StorageError(f"storage_url must be http://host:port, not {base!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    except OSError as exc:
        raise StorageError(f"{method} {path}: {exc}") from None
    finally:
        conn.close()


def write(base: str, bucket: str, name: str, data: bytes) -> None:
    """Write one object (creating the bucket if the emulator does not have it)."""
    path = f"/upload/storage/v1/b/{quote(bucket, safe='')}/o?uploadType=media&name={quote(name, safe='')}"
    headers = {"Content-Type": "application/jsonl"}
    status, body = _request(base, "POST", path, data, headers)
    if status == 404:
        _request(base, "POST", "/storage/v1/b?project=sim", json.dumps({"name": bucket}).encode(),
                 {"Content-Type": "application/json"})
        status, body = _request(base, "POST", path, data, headers)
    if status >= 300:
        raise StorageError(f"writing gs://{bucket}/{name}: HTTP {status} {body[:200]!r}")


def read(base: str, bucket: str, name: str) -> bytes:
    status, body = _request(base, "GET", f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}?alt=media")
    if status >= 300:
        raise StorageError(f"reading gs://{bucket}/{name}: HTTP {status}")
    return body
