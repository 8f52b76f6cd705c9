"""What a job's tokens cost at list prices: an estimate, not a bill.

For each request (its tokens summed with the others at the same rate):

- uncached input = prompt − cached + tool-use prompt, at ``input`` × (1 − batch discount);
- output = candidates + thoughts (thinking is billed as output), at ``output`` × (1 − batch discount);
- cached input at ``cached_input`` (× (1 − batch discount) only where the table says the discounts stack);
- requests whose prompt exceeds 200,000 tokens at the model's ``above_200k`` rates, where it has them.

Arithmetic is exact (``Decimal``, prices per million tokens) and the amount is rounded half-even to
micro-dollars (6 decimal places) only at the end. A model the table does not know gives no cost (None).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from .lines import Usage
from .prices import ModelPrices, PriceTable, Rates
from .summary import Summary

MILLION = Decimal(1_000_000)
MICRO = Decimal("0.000001")


def _minus(a: Usage, b: Usage) -> Usage:
    return Usage(a.prompt - b.prompt, a.candidates - b.candidates, a.thoughts - b.thoughts, a.cached - b.cached,
                 a.tool_use_prompt - b.tool_use_prompt, a.total - b.total)


def usage_cost(usage: Usage, rates: Rates, prices: ModelPrices) -> Decimal:
    """USD (unrounded) of ``usage`` at ``rates``, with ``prices``' batch terms."""
    batch = 1 - prices.batch_discount
    cached = min(usage.cached, usage.prompt)
    uncached = usage.prompt - cached + usage.tool_use_prompt
    output = usage.candidates + usage.thoughts
    cached_rate = rates.cached_input * (batch if prices.cached_batch_discount else 1)
    micro_tokens = uncached * rates.input * batch + output * rates.output * batch + cached * cached_rate
    return micro_tokens / MILLION


def amount(usage: Usage, usage_long: Usage, prices: ModelPrices) -> Decimal:
    """USD, rounded to micro-dollars: ``usage_long`` (the part from prompts over 200,000 tokens) at the
    model's higher rates where it has them, the rest at its base rates."""
    if prices.above_200k is None:
        total = usage_cost(usage, prices.rates, prices)
    else:
        total = (usage_cost(_minus(usage, usage_long), prices.rates, prices)
                 + usage_cost(usage_long, prices.above_200k, prices))
    return total.quantize(MICRO, rounding=ROUND_HALF_EVEN)


def estimate(summary: Summary, table: PriceTable, model: str | None) -> dict[str, Any] | None:
    """The A10 ``cost`` map (``{"amount", "currency", "model", "prices"}``), or None when the model is
    unknown to the table or the outputs' usage was not read (BigQuery)."""
    if summary.usage is None:
        return None
    prices = table.lookup(summary.api, model)
    if prices is None:
        return None
    value = amount(summary.usage, summary.usage_long or Usage(), prices)
    return {"amount": float(value), "currency": "USD", "model": prices.model, "prices": table.version}
