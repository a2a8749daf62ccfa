"""The hyperparameters a job trains with: what the request names, and for `auto` the rules OpenAI documents
(its cookbook's data preparation guide) where it documents them.

LoRA trains a small adapter, so its learning rate is higher than a full fine-tune's: the multiplier scales
BASE_LEARNING_RATE, the rate peft's own examples use for LoRA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

BASE_LEARNING_RATE = 2e-4
# OpenAI: 3 epochs by default, more for small sets (to reach 100 examples seen) and fewer for large ones.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


@dataclass(frozen=True)
class Hyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float

    @property
    def learning_rate(self) -> float:
        return BASE_LEARNING_RATE * self.learning_rate_multiplier

    def to_wire(self) -> dict[str, Any]:
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }


def auto_epochs(examples: int) -> int:
    if examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / examples))
    if examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // examples)
    return TARGET_EPOCHS


def auto_batch_size(examples: int) -> int:
    """About 0.2% of the examples, between 1 and 256, as OpenAI chooses."""
    return max(1, min(256, round(examples * 0.002)))


def auto_learning_rate_multiplier(batch_size: int) -> float:
    """Larger batches take larger steps (OpenAI: "larger learning rates tend to perform better with larger batch
    sizes"): 2 (4e-4) up to a batch of 8, growing with the batch's square root beyond."""
    return round(2.0 * max(1.0, math.sqrt(batch_size / 8)), 4)


def resolve(asked: dict[str, Any], examples: int) -> Hyperparameters:
    """The request's values, `auto` (or absent) replaced by the rules above for a set of `examples`."""

    def given(name: str) -> Any:
        value = asked.get(name)
        return None if value in (None, "auto") else value

    epochs = given("n_epochs") or auto_epochs(examples)
    batch = given("batch_size") or auto_batch_size(examples)
    batch = min(batch, examples)  # a batch cannot hold more examples than there are
    multiplier = given("learning_rate_multiplier") or auto_learning_rate_multiplier(batch)
    return Hyperparameters(int(epochs), int(batch), float(multiplier))
