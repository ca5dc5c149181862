"""Estimated prices (USD per million tokens) for cost quotes and --max-cost.

List prices change; these are estimates for planning, overridable with --price-in/--price-out.
Longest matching model-name prefix wins.
"""

from __future__ import annotations

from dataclasses import dataclass

# (input, output) USD per 1M tokens, standard (non-batch) tier.
PRICES: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-1.5-pro": (1.25, 5.0),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.0),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "text-davinci-002": (20.0, 20.0),
    "davinci-002": (2.0, 2.0),
    "oracle": (0.0, 0.0),
    "replay": (0.0, 0.0),
}


@dataclass(frozen=True)
class Price:
    """USD per 1M input and output tokens; `known` is False for a guessed zero price."""

    input_per_m: float
    output_per_m: float
    known: bool = True

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_m + output_tokens * self.output_per_m) / 1e6


def price_for(model: str, price_in: float | None = None, price_out: float | None = None) -> Price:
    """The price of `model`; explicit overrides win; unknown models cost 0 (flagged)."""
    name = model.lower().removeprefix("models/")
    match = max((p for p in PRICES if name.startswith(p)), key=len, default=None)
    base = PRICES.get(match, (0.0, 0.0)) if match else (0.0, 0.0)
    known = match is not None or (price_in is not None and price_out is not None)
    return Price(
        base[0] if price_in is None else price_in,
        base[1] if price_out is None else price_out,
        known,
    )


# Batch jobs bill at half the standard price on both providers: "50% cost discount compared to
# synchronous APIs" (platform.openai.com/docs/guides/batch) and "priced at 50% of the standard
# cost" (ai.google.dev/gemini-api/docs/batch-mode).
BATCH_DISCOUNT = 0.5


def batch_price(price: Price) -> Price:
    """The batch-mode price of a model (explicit --price-in/--price-out are standard prices)."""
    return Price(
        price.input_per_m * BATCH_DISCOUNT, price.output_per_m * BATCH_DISCOUNT, price.known
    )
