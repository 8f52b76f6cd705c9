"""CRC32C (Castagnoli) as Cloud Storage reports it, in pure Python: slow, for tests and the demo's
checks of what the reactor copied. Not part of the deployed bundle."""

from __future__ import annotations

import base64
import functools


@functools.cache
def _table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def crc32c_of(data: bytes) -> str:
    """base64 of the big-endian 4 bytes, as in an object resource's ``crc32c``."""
    crc, table = 0xFFFFFFFF, _table()
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return base64.b64encode((crc ^ 0xFFFFFFFF).to_bytes(4, "big")).decode()
