"""The token price table the cost estimate uses: the one shipped in the package (``prices.json``), or the
one ``RELAY_PRICES`` names (a JSON file path or a ``gs://`` object) in the same format.

Format (prices in USD per 1,000,000 tokens, as JSON numbers or decimal strings; read as ``Decimal``)::

    {"version": "2026-12-04", "currency": "USD", "sources": {...}, "notes": [...],
     "apis": {"gemini": {"batch_discount": 0.5, "cached_batch_discount": false}, "vertex": {...}},
     "models": {"gemini-2.5-pro": {"aliases": [...],
                                   "gemini": {"input", "output", "cached_input",
                                              "above_200k": {"input", "output", "cached_input"}},
                                   "vertex": {...}}}}

``lookup(api, model)`` finds a job's model by its id (``models/…`` and ``publishers/google/models/…``
prefixes and an ``@version`` or ``-001``-style suffix dropped, aliases followed); a model it does not
know, or an API the model has no prices for, gives None: never a guess.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..errors import PermanentError

APIS = ("gemini", "vertex")
MAX_TABLE_BYTES = 1024 * 1024
_MODEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_VERSION_SUFFIX = re.compile(r"-\d{3}$")


class PricesError(PermanentError):
    """The price table cannot be read or is malformed (names the source)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="bad_prices")


@dataclasses.dataclass(frozen=True)
class Rates:
    """USD per 1,000,000 tokens."""

    input: Decimal
    output: Decimal
    cached_input: Decimal


@dataclasses.dataclass(frozen=True)
class ModelPrices:
    """One model's prices on one API, with that API's batch terms."""

    model: str
    api: str
    rates: Rates
    above_200k: Rates | None
    batch_discount: Decimal  # 0.5: batch requests cost half the standard rate
    cached_batch_discount: bool  # whether the batch discount also applies to cached input


@dataclasses.dataclass(frozen=True)
class PriceTable:
    version: str
    source: str
    prices: Mapping[tuple[str, str], ModelPrices]  # (api, model) -> prices
    aliases: Mapping[str, str]

    def lookup(self, api: str, model: str | None) -> ModelPrices | None:
        """The prices of ``model`` (as a job names it) on ``api``, or None when the table does not know it."""
        name = canonical_model(model)
        if name is None:
            return None
        for candidate in (name, _VERSION_SUFFIX.sub("", name)):
            found = self.prices.get((api, self.aliases.get(candidate, candidate)))
            if found is not None:
                return found
        return None


def canonical_model(model: str | None) -> str | None:
    """``models/gemini-2.5-flash``, ``publishers/google/models/gemini-2.5-flash@001`` or
    ``projects/p/locations/l/publishers/google/models/gemini-2.5-flash`` → ``gemini-2.5-flash``; None for
    anything else (a tuned model's endpoint, another publisher)."""
    if not isinstance(model, str):
        return None
    text = model.strip()
    if "/publishers/" in text or text.startswith("publishers/"):
        head, _, text = text.partition("publishers/")
        if not text.startswith("google/models/") or (head and not head.startswith("projects/")):
            return None
        text = text[len("google/models/"):]
    text = text.removeprefix("models/").partition("@")[0].lower()
    return text if _MODEL.match(text) else None


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise PricesError(f"{where} must be a number, not {value!r:.60}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise PricesError(f"{where} must be a number, not {value!r:.60}") from None
    if not number.is_finite() or number < 0 or number > 1_000_000:
        raise PricesError(f"{where} must be a price between 0 and 1000000, not {value!r:.60}")
    return number


def _rates(raw: Any, where: str) -> Rates:
    if not isinstance(raw, dict):
        raise PricesError(f"{where} must be an object of input, output and cached_input prices")
    missing = [k for k in ("input", "output", "cached_input") if k not in raw]
    if missing:
        raise PricesError(f"{where} lacks {', '.join(missing)}")
    return Rates(_decimal(raw["input"], f"{where}.input"), _decimal(raw["output"], f"{where}.output"),
                 _decimal(raw["cached_input"], f"{where}.cached_input"))


def parse_table(data: bytes | str, *, source: str) -> PriceTable:
    """A price table from its JSON text; ``PricesError`` naming ``source`` when it is not one."""
    try:
        raw = json.loads(data, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        raise PricesError(f"prices {source}: not JSON ({str(exc)[:120]})") from None
    try:
        return _table(raw, source)
    except PricesError as exc:
        raise PricesError(f"prices {source}: {exc}") from None


def _table(raw: Any, source: str) -> PriceTable:
    if not isinstance(raw, dict):
        raise PricesError("the table must be a JSON object")
    version = raw.get("version")
    if not isinstance(version, str) or not version.strip() or len(version) > 100:
        raise PricesError("version must be a non-empty string (e.g. the date the prices were read)")
    if raw.get("currency", "USD") != "USD":
        raise PricesError("currency must be USD")
    apis = raw.get("apis")
    if not isinstance(apis, dict):
        raise PricesError('apis must be {"gemini": {"batch_discount", "cached_batch_discount"}, "vertex": …}')
    terms: dict[str, tuple[Decimal, bool]] = {}
    for api in APIS:
        entry = apis.get(api)
        if not isinstance(entry, dict):
            raise PricesError(f"apis.{api} must be an object")
        discount = _decimal(entry.get("batch_discount"), f"apis.{api}.batch_discount")
        if discount > 1:
            raise PricesError(f"apis.{api}.batch_discount must be a share between 0 and 1")
        stacks = entry.get("cached_batch_discount", False)
        if not isinstance(stacks, bool):
            raise PricesError(f"apis.{api}.cached_batch_discount must be true or false")
        terms[api] = (discount, stacks)
    models = raw.get("models")
    if not isinstance(models, dict) or not models:
        raise PricesError("models must be a non-empty object")
    prices: dict[tuple[str, str], ModelPrices] = {}
    aliases: dict[str, str] = {}
    for model, entry in models.items():
        if not isinstance(model, str) or not _MODEL.match(model):
            raise PricesError(f"{str(model)[:60]!r} is not a model id (lowercase, e.g. gemini-2.5-flash)")
        if not isinstance(entry, dict):
            raise PricesError(f"models.{model} must be an object")
        for alias in entry.get("aliases") or []:
            if not isinstance(alias, str) or not _MODEL.match(alias) or alias in models:
                raise PricesError(f"models.{model}.aliases: {str(alias)[:60]!r} is not a model id of its own")
            aliases[alias] = model
        for api in APIS:
            if api not in entry:
                continue
            where = f"models.{model}.{api}"
            rates = _rates(entry[api], where)
            long = entry[api].get("above_200k")
            discount, stacks = terms[api]
            prices[(api, model)] = ModelPrices(model=model, api=api, rates=rates,
                                               above_200k=None if long is None else _rates(long, where + ".above_200k"),
                                               batch_discount=discount, cached_batch_discount=stacks)
        if not any(api in entry for api in APIS):
            raise PricesError(f"models.{model} has prices for neither gemini nor vertex")
    return PriceTable(version=version.strip(), source=source, prices=prices, aliases=aliases)


@functools.cache
def shipped_table() -> PriceTable:
    """The table shipped in the package."""
    text = (importlib.resources.files("batch_relay") / "results" / "prices.json").read_text(encoding="utf-8")
    return parse_table(text, source="batch_relay/results/prices.json")


def read_local(path: str) -> PriceTable:
    """A table from a file on this machine."""
    try:
        with Path(path).open("rb") as f:
            data = f.read(MAX_TABLE_BYTES + 1)
    except OSError as exc:
        raise PricesError(f"prices {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_TABLE_BYTES:
        raise PricesError(f"prices {path}: larger than {MAX_TABLE_BYTES} bytes")
    return parse_table(data, source=path)


async def load_table(setting: str | None, *,
                     read_object: Callable[[str, str], Awaitable[bytes]] | None = None) -> PriceTable:
    """The table ``RELAY_PRICES`` names (``settings.prices``), or the shipped one when it is unset.
    ``read_object(bucket, name)`` reads a ``gs://`` table (e.g. through the reactor's storage client)."""
    if not setting:
        return shipped_table()
    if setting.startswith("gs://"):
        if read_object is None:
            raise PricesError(f"prices {setting}: no Cloud Storage client to read it with")
        bucket, _, name = setting[5:].partition("/")
        data = await read_object(bucket, name)
        if len(data) > MAX_TABLE_BYTES:
            raise PricesError(f"prices {setting}: larger than {MAX_TABLE_BYTES} bytes")
        return parse_table(data, source=setting)
    return read_local(setting)
