"""Plain HTTP helpers on fake-gcs-server (the JSON API), for arranging sources and checking copies in
tests, the demo and the soak. Not the project's storage client: that is ``batch_relay.storage``."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import httpx


class FakeGcs:
    def __init__(self, url: str, project: str = "batch-relay-local") -> None:
        self.url = url
        self.project = project
        self.http = httpx.Client(base_url=url, timeout=60)

    def create_bucket(self, name: str) -> str:
        self.http.post("/storage/v1/b", params={"project": self.project}, json={"name": name}).raise_for_status()
        return name

    def bucket(self, prefix: str) -> str:
        """A new bucket with a unique name starting with ``prefix``."""
        return self.create_bucket(f"{prefix}-{uuid.uuid4().hex[:8]}")

    def put(self, bucket: str, name: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """Upload an object (with custom ``metadata``: a multipart upload)."""
        if not metadata:
            self.http.post(f"/upload/storage/v1/b/{bucket}/o", params={"uploadType": "media", "name": name},
                           content=data).raise_for_status()
            return
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n"
                f"{json.dumps({'name': name, 'metadata': metadata})}\r\n"
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + data + \
            f"\r\n--{boundary}--\r\n".encode()
        self.http.post(f"/upload/storage/v1/b/{bucket}/o", params={"uploadType": "multipart"}, content=body,
                       headers={"Content-Type": f"multipart/related; boundary={boundary}"}).raise_for_status()

    def get(self, bucket: str, name: str) -> bytes:
        response = self.http.get(f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}", params={"alt": "media"})
        return response.raise_for_status().content

    def meta(self, bucket: str, name: str) -> dict[str, Any] | None:
        response = self.http.get(f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}")
        return None if response.status_code == 404 else response.raise_for_status().json()

    def objects(self, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every object under ``prefix``, by name, following pages."""
        out: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            params = {"prefix": prefix, **({"pageToken": token} if token else {})}
            body = self.http.get(f"/storage/v1/b/{bucket}/o", params=params).raise_for_status().json()
            for item in body.get("items", []):
                out[item["name"]] = item
            token = body.get("nextPageToken")
            if not token:
                return out

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(self.objects(bucket, prefix))

    def close(self) -> None:
        self.http.close()
