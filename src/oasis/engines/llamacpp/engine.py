"""llama.cpp text generation with continuous batching.

One scheduler thread owns the llama.cpp context. Each running sequence holds a KV slot (a llama.cpp sequence
id). Every step builds one batch: one token for each sequence that is generating, then chunks of the prompts
of sequences that are still reading theirs, up to `batch_size` tokens; sequences join and leave between
steps. A slot remembers the tokens in its KV cache, so a new prompt that shares a prefix with what a free
slot last held (the same system prompt, the conversation so far) only decodes the rest.

The event loop never waits on llama.cpp: tokens travel to asyncio through call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import itertools
import logging
import math
import os
import re
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from oasis.engines.base import EngineLoad
from oasis.engines.llamacpp import native
from oasis.engines.llamacpp.call_watch import ROOT as CALL_ROOT
from oasis.engines.llamacpp.call_watch import CallWatch, call_rules, parameter_parts, trigger_pattern
from oasis.engines.llamacpp.chain import ChainDraw, SamplerChain
from oasis.engines.llamacpp.sampling import FullDistributionSampler
from oasis.engines.llamacpp.threads import CoreShare, name_this_thread
from oasis.engines.llamacpp.weights import gguf_path
from oasis.engines.options import LlamaCppOptions
from oasis.engines.text import (
    CallGrammar,
    EngineBusy,
    PromptTooLong,
    SampledToken,
    SamplingParams,
    TokenLogprob,
    UnusableSchema,
    background_work,
)
from oasis.settings import ModelSpec

log = logging.getLogger("oasis.engines.llamacpp")
_engine_numbers = itertools.count(1)

_END = object()
# Copying a cache between sequences moves the whole per-sequence buffer; below this many shared tokens,
# decoding them again costs less, and a sequence with fewer tokens left to generate is not worth moving.
_SHARE_MIN = 32
# A temperature below this draws as temperature 0, as vLLM's does (_SAMPLING_EPS): the logits divided by a valid
# temperature such as 1e-44 overflow float32, and a draw from infinities is no draw from the distribution.
_GREEDY_BELOW = 1e-5
_GRAMMARS_REMEMBERED = 256
# Steps that running sequences must have stood apart before they are moved together: a hole left by a
# finished sequence is often filled by the next request at once (a client sending one after another).
_SETTLE_STEPS = 4


@dataclass
class _Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose K/V the cache holds for this seq id
    busy: bool = False


class _Sequence:
    def __init__(self, prompt: list[int], params: SamplingParams, loop: asyncio.AbstractEventLoop) -> None:
        self.prompt = prompt
        self.params = params
        self.loop = loop
        self.channel = _Channel(loop)
        self.cancelled = False
        self.slot: _Slot | None = None
        self.cached_prompt_tokens = 0  # of the prompt, those a slot's cache held when it was admitted
        self.feed: list[int] = []  # tokens still to decode: the prompt's tail, then each sampled token
        self.sampler: SamplerChain | None = None  # llama.cpp's samplers, when they are needed
        self.draw: FullDistributionSampler | None = None  # or a plain draw at a temperature
        # or a chain llama.cpp runs in its graph for this sequence's slot (`backend_sampling`)
        self.in_graph: SamplerChain | None = None
        self.generated = 0
        self.logits_row = -1  # which batch row holds this sequence's logits after a step
        # A scoring sequence reads its prompt with logits at every position and samples nothing.
        self.scoring = False
        self.score_rows: list[tuple[int, int]] = []  # (batch row, prompt position) after a step
        self.background = background_work.get()
        # Until a tool call opens (`call_grammar`): then the call's grammar joins the sampler
        self.call_watch = CallWatch(params.call_grammar) if params.call_grammar is not None else None


class _Channel:
    """A sequence's tokens on their way to its one reader, on the event loop: what asyncio.Queue does besides (a
    deque of waiting readers, loop checks at every call) is work at every streamed token that one reader needs
    none of."""

    __slots__ = ("_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: Any) -> None:
        self._items.append(item)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = self._loop.create_future()
            await self._waiter
        return self._items.popleft()


def _deliver(items: list[tuple[_Sequence, Any]]) -> None:
    for sequence, item in items:
        sequence.channel.put(item)


class _Outbox:
    """What one scheduler step produced for the event loops, handed over in one wake-up per loop (a wake-up
    per token cost a self-pipe write and a loop iteration each, on the cores that decode)."""

    def __init__(self) -> None:
        self._items: list[tuple[_Sequence, Any]] = []

    def put(self, sequence: _Sequence, item: Any) -> None:
        self._items.append((sequence, item))

    def flush(self) -> None:
        if not self._items:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, Any]]] = {}
        for sequence, item in self._items:
            by_loop.setdefault(sequence.loop, []).append((sequence, item))
        self._items = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is gone: the server is shutting down
                for sequence, _ in items:
                    sequence.cancelled = True


class _TokenStream:
    def __init__(self, sequence: _Sequence, engine: LlamaCppEngine) -> None:
        self._sequence = sequence
        self._engine = engine
        self._done = False

    def __aiter__(self) -> _TokenStream:
        return self

    @property
    def cached_prompt_tokens(self) -> int:
        """Of the prompt, the tokens read from a slot's cache rather than decoded (0 until it is admitted)."""
        return self._sequence.cached_prompt_tokens

    async def __anext__(self) -> SampledToken:
        if self._done:
            raise StopAsyncIteration
        item = await self._sequence.channel.get()
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._done = True
        return item

    def cancel(self) -> None:
        if not self._sequence.cancelled:
            self._sequence.cancelled = True
            self._engine._wake()

    async def aclose(self) -> None:
        self._done = True
        self.cancel()


class LlamaCppEngine:
    """A GGUF model served from this process. Options (config file `options:`): `context_length` per
    sequence (default 4096, at most the trained context), `parallel` sequences decoded together (default 8),
    `batch_size` tokens per step (512), `threads` (all cores; fewer while other work keeps cores busy, unless
    `adapt_threads` is false), `backend_sampling` to draw tokens inside llama.cpp's graph (off), `max_queue` waiting
    requests before 429 (256),
    `chat_template` to override the one in the GGUF, `gpu_layers` to offload to a GPU (llama.cpp built with a
    GPU backend offloads every layer unless told fewer; 0 keeps the model on the CPU)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        options = LlamaCppOptions.model_validate(spec.options)
        self._requested_context = options.context_length
        self._parallel = options.parallel
        self._batch_size = options.batch_size
        self._threads = options.threads or os.cpu_count() or 1
        # The scheduler thread's kernel name: ggml's OpenMP workers inherit it, which is how CoreShare tells this
        # engine's CPU time from everyone else's.
        self._thread_name = f"oasis-llm-{next(_engine_numbers)}"
        self._core_share = CoreShare(self._threads, self._thread_name) if options.adapt_threads else None
        self._decode_threads = self._threads
        self._max_queue = options.max_queue
        self._backend_sampling = options.backend_sampling
        self._warned_partial_draws = False  # a device that draws only part of a chain: said once
        self._template_override = options.chat_template
        self._gpu_layers = options.gpu_layers
        self._repack_weights = options.repack_weights if options.repack_weights is not None else not native.uses_amx()
        self._model: Any = None
        self._context: Any = None
        self._vocab: Any = None
        self._batch: Any = None
        # numpy views of the batch's arrays and each row's sequence id pointer, while the batch exists
        self._batch_tokens: Any = None
        self._batch_positions: Any = None
        self._batch_outputs: Any = None
        self._batch_sequence_ids: list[Any] = []
        self._n_vocab = 0
        self._context_length = 0
        self._chat_template: str | None = None
        self._tool_use_template: str | None = None
        self._special: dict[str, str] = {}
        self._fim: tuple[int, int, int] | None = None
        self._pieces: dict[int, bytes] = {}
        self._markup_pieces: dict[int, bytes] = {}
        self._eog_tokens: list[int] = []
        self._eog_set: frozenset[int] = frozenset()
        self._logits_views: dict[int, np.ndarray] = {}
        self._chain_draw: ChainDraw | None = None  # for sampler chains, once the vocabulary is known
        self._grammars_parsed: set[str] = set()
        self._logits_address = native.logits_address()
        self._slots: list[_Slot] = []
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._outbox = _Outbox()
        self._apart_steps = 0  # consecutive steps with holes between the busy slots
        # Prompt tokens decoded, and those taken from a slot's cache instead (for logs and tests).
        self.prompt_tokens_decoded = 0
        self.prompt_tokens_cached = 0

    @property
    def decode_threads(self) -> int:
        """The threads the next step decodes with (fewer than `threads` while other work keeps cores busy)."""
        return self._decode_threads

    def load(self) -> EngineLoad:
        # Read without the lock: a scrape may see a count one step old, never a torn one (len() is atomic).
        return EngineLoad(queued=len(self._waiting), busy=len(self._running), slots=self._parallel)

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._loop, name=f"llamacpp-{self.spec.id}", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        lib = native.lib()
        path = gguf_path(self.spec)
        model_params = lib.llama_model_default_params()
        model_params.use_extra_bufts = self._repack_weights
        if self._gpu_layers is not None:
            model_params.n_gpu_layers = self._gpu_layers
        self._model = lib.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self._vocab = lib.llama_model_get_vocab(self._model)
        self._n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self._chain_draw = ChainDraw(self._n_vocab)
        trained = lib.llama_model_n_ctx_train(self._model)
        self._context_length = min(self._requested_context, trained) if trained > 0 else self._requested_context
        # No step holds more tokens than the whole cache (llama.cpp clamps n_batch so too); a larger setting
        # would only allocate batch and output buffers that can never fill.
        self._batch_size = min(self._batch_size, self._context_length * self._parallel)
        context_params = lib.llama_context_default_params()
        context_params.n_ctx = self._context_length * self._parallel
        context_params.n_batch = self._batch_size
        context_params.n_ubatch = self._batch_size
        context_params.n_seq_max = self._parallel
        # Scoring a prompt wants logits at every position of a batch, not only the last.
        context_params.n_outputs_max = self._batch_size
        # llama.cpp holds this to sequences that draw in its graph only (one output a step each) and sizes their
        # sampling graph by it: past 1, ~2 x 512 rows of the vocabulary reserved again at every attach.
        context_params.n_outputs_max_per_seq = 1 if self._backend_sampling else self._batch_size
        context_params.n_threads = self._threads
        context_params.n_threads_batch = self._threads
        context_params.kv_unified = False  # each sequence gets its own context_length of cache
        context_params.no_perf = True
        self._context = lib.llama_init_from_model(self._model, context_params)
        if not self._context:
            raise RuntimeError(f"llama.cpp could not create a context for {path}")
        self._batch = lib.llama_batch_init(self._batch_size, 0, 1)
        # The batch's arrays seen through numpy, and each row's one sequence id: filling them through the ctypes
        # structure made a pointer object per field per token.
        size = self._batch_size
        self._batch_tokens = np.ctypeslib.as_array(self._batch.token, shape=(size,))
        self._batch_positions = np.ctypeslib.as_array(self._batch.pos, shape=(size,))
        self._batch_outputs = np.ctypeslib.as_array(self._batch.logits, shape=(size,))
        np.ctypeslib.as_array(self._batch.n_seq_id, shape=(size,))[:] = 1  # every row belongs to one sequence
        self._batch_sequence_ids = [self._batch.seq_id[row] for row in range(size)]
        self._slots = [_Slot(seq_id=i) for i in range(self._parallel)]
        template = lib.llama_model_chat_template(self._model, None)
        tool_use = lib.llama_model_chat_template(self._model, b"tool_use")
        # As llama.cpp: a model with only a named `tool_use` template uses it for every request; a template the
        # user configured replaces both.
        self._tool_use_template = None if self._template_override else (tool_use.decode() if tool_use else None)
        self._chat_template = self._template_override or (template.decode() if template else self._tool_use_template)
        self._special = {
            "bos_token": self._piece(lib.llama_vocab_bos(self._vocab), special=True).decode(errors="replace"),
            "eos_token": self._piece(lib.llama_vocab_eos(self._vocab), special=True).decode(errors="replace"),
        }
        self._eog_tokens = [t for t in range(self._n_vocab) if lib.llama_vocab_is_eog(self._vocab, t)]
        self._eog_set = frozenset(self._eog_tokens)
        fim = (
            lib.llama_vocab_fim_pre(self._vocab),
            lib.llama_vocab_fim_suf(self._vocab),
            lib.llama_vocab_fim_mid(self._vocab),
        )
        self._fim = fim if all(token >= 0 for token in fim) else None
        log.info(
            "loaded %s from %s: context %d x %d sequences", self.spec.id, path, self._context_length, self._parallel
        )

    async def close(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        lib = native.lib()
        for sequence in [*self._running, *self._waiting]:
            self._outbox.put(sequence, RuntimeError("the engine stopped"))
            self._free_sampler(sequence)
        self._outbox.flush()
        self._logits_views.clear()
        if self._batch is not None:
            lib.llama_batch_free(self._batch)
        if self._context:
            lib.llama_free(self._context)
        if self._model:
            lib.llama_model_free(self._model)
        self._model = self._context = self._batch = None
        self._batch_tokens = self._batch_positions = self._batch_outputs = None  # views of the freed batch
        self._batch_sequence_ids = []

    # --- what services see ----------------------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def busy(self) -> bool:
        """Whether sequences are waiting or running: an engine is closed only once it is not."""
        with self._lock:
            return bool(self._running or self._waiting)

    @property
    def chat_template(self) -> str | None:
        return self._chat_template

    @property
    def tool_use_template(self) -> str | None:
        return self._tool_use_template

    @property
    def special_tokens(self) -> Mapping[str, str]:
        return self._special

    @property
    def max_waiting(self) -> int:
        return self._max_queue

    @property
    def fim_tokens(self) -> tuple[int, int, int] | None:
        return self._fim

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        lib = native.lib()
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buffer = (native.llama_token * capacity)()
        count = lib.llama_tokenize(self._vocab, data, len(data), buffer, capacity, add_special, parse_special)
        if count < 0:
            capacity = -count
            buffer = (native.llama_token * capacity)()
            count = lib.llama_tokenize(self._vocab, data, len(data), buffer, capacity, add_special, parse_special)
        return list(buffer[:count])

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.token_piece(token) for token in tokens).decode("utf-8", errors="replace")

    def token_piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._piece(token, special=False)
        return piece

    def _markup_piece(self, token: int) -> bytes:
        piece = self._markup_pieces.get(token)
        if piece is None:
            piece = self._markup_pieces[token] = self._piece(token, special=True)
        return piece

    def is_valid_token(self, token: int) -> bool:
        return 0 <= token < self._n_vocab

    def _piece(self, token: int, *, special: bool) -> bytes:
        lib = native.lib()
        buffer = ctypes.create_string_buffer(64)
        size = lib.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = lib.llama_token_to_piece(self._vocab, token, buffer, -size, 0, special)
        return buffer.raw[:size]

    def generate(self, prompt: list[int], params: SamplingParams) -> _TokenStream:
        return _TokenStream(self._enqueue(prompt, params, scoring=False), self)

    async def score(self, prompt: list[int], top_logprobs: int) -> list[SampledToken]:
        stream = _TokenStream(
            self._enqueue(prompt, SamplingParams(max_tokens=0, top_logprobs=top_logprobs), True), self
        )
        try:
            return [token async for token in stream]
        finally:
            stream.cancel()

    def _enqueue(self, prompt: list[int], params: SamplingParams, scoring: bool) -> _Sequence:
        if not prompt:
            raise ValueError("the prompt is empty")
        if len(prompt) + params.max_tokens > self._context_length:
            raise PromptTooLong(len(prompt) + params.max_tokens, self._context_length)
        if params.json_schema is not None and not scoring:
            self.check_schema(params.json_schema)
        if params.call_grammar is not None and (
            params.json_schema is not None or not self._call_grammar_parses(params.call_grammar)
        ):
            params = replace(params, call_grammar=None)  # the reply is read as without it, as before there was one
        sequence = _Sequence(prompt, params, asyncio.get_running_loop())
        sequence.scoring = scoring
        with self._lock:
            if self._stopping:  # closed (a fine-tune unloaded): no thread is left to serve the sequence
                raise RuntimeError("the engine stopped")
            if len(self._waiting) >= self._max_queue:
                raise EngineBusy(retry_after=1)
            if sequence.background:
                self._waiting.append(sequence)
            else:  # online work goes ahead of every waiting background sequence
                ahead = next((i for i, queued in enumerate(self._waiting) if queued.background), len(self._waiting))
                self._waiting.insert(ahead, sequence)
            self._lock.notify()
        return sequence

    def check_schema(self, schema: Mapping[str, object]) -> None:
        """Refuses a schema that cannot become a grammar llama.cpp parses, before it is queued: the scheduler
        thread builds the grammar, and there a failure could only fail the sequence (and once, ended the thread).
        Each grammar is parsed here once."""
        if not self._parses(_grammar_rules(schema), b"root"):
            raise UnusableSchema("llama.cpp could not parse the grammar made from it")

    def _call_grammar_parses(self, grammar: CallGrammar) -> bool:
        """Whether the call's grammar is one llama.cpp parses."""
        try:
            rules = _call_grammar_rules(grammar)
        except UnusableSchema:
            return False
        if not self._parses(rules, CALL_ROOT.encode()):
            log.warning("%s: a tool call grammar did not parse; calls are read as written", self.spec.id)
            return False
        return True

    def _parses(self, rules: str, root: bytes) -> bool:
        """Whether llama.cpp parses `rules` (from `root`); a short grammar that parsed is remembered, not parsed
        again."""
        if rules in self._grammars_parsed:
            return True
        parsed = native.lib().llama_sampler_init_grammar(self._vocab, rules.encode(), root)
        if not parsed:  # a NULL pointer
            return False
        native.lib().llama_sampler_free(parsed)
        if len(rules) <= native.CACHED_SCHEMA_CHARS:
            if len(self._grammars_parsed) >= _GRAMMARS_REMEMBERED:
                self._grammars_parsed.clear()
            self._grammars_parsed.add(rules)
        return True

    def _hold_call(self, sequence: _Sequence, token: int, piece: bytes) -> bool:
        """Watches the reply for a tool call's opening; where one opens, gives the sequence's sampler the call's
        grammar, fed the tokens that hold the opening (call_watch.py). True at the token that opened it."""
        watch, spec = sequence.call_watch, sequence.params.call_grammar
        assert watch is not None and spec is not None
        replay = watch.add(token, piece)
        if replay is None:
            if watch.closed:
                sequence.call_watch = None
            return False
        # llama.cpp reads the replayed tokens' text with special tokens written out: its trigger must find the
        # opening there too, or the grammar would wait while the call is read as opened
        held_text = b"".join(self._markup_piece(held) for held in watch.tokens[-replay:])
        if re.search(trigger_pattern(spec, end=r"\Z", kind=watch.opened).encode(), held_text) is None:
            return False
        sequence.call_watch = None
        lib = native.lib()
        rules = _call_grammar_rules(spec)
        patterns = (ctypes.c_char_p * 1)(trigger_pattern(spec, kind=watch.opened).encode())
        grammar = lib.llama_sampler_init_grammar_lazy_patterns(
            self._vocab, rules.encode(), CALL_ROOT.encode(), patterns, 1, None, 0
        )
        if not grammar:  # parsed when queued, so not expected
            log.error("%s: the tool call grammar could not be made", self.spec.id)
            return False
        for held in watch.tokens[-replay:]:
            lib.llama_sampler_accept(grammar, held)
        if sequence.sampler is None:  # drawn in numpy or by argmax until now: the chain draws with a grammar
            sequence.draw = None
            sequence.sampler = self._make_sampler(sequence.params)
        sequence.sampler.grammar = grammar
        return True

    def _new_grammar(self, rules: str) -> Any:
        grammar = native.lib().llama_sampler_init_grammar(self._vocab, rules.encode(), b"root")
        if not grammar:  # a NULL pointer
            raise UnusableSchema("llama.cpp could not parse the grammar made from it")
        return grammar

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify()

    # --- the scheduler thread -------------------------------------------------------------------------------

    def _loop(self) -> None:
        name_this_thread(self._thread_name)
        while True:
            # Admitting may take milliseconds (a grammar to build): what is ready goes out first. Only when a slot
            # is free: with every slot busy nothing is admitted, and the tokens go out just before the decode.
            if self._waiting and len(self._running) < len(self._slots):
                self._outbox.flush()
            with self._lock:
                while not self._stopping and not self._waiting and not self._running:
                    self._wait_idle()
                if self._stopping:
                    return
                self._admit()
            self._retire_cancelled()
            if not self._running:
                self._outbox.flush()
                continue
            self._compact()
            try:
                self._step()
            except Exception as exc:  # a failed decode fails the sequences in it, not the engine
                log.exception("llama.cpp step failed")
                for sequence in list(self._running):
                    self._outbox.put(sequence, exc)
                    self._release(sequence)
            # While sequences run, the next step hands this one's tokens over just before its decode (see _step).
            # Otherwise now; and before a reading of /proc (about a millisecond), which the first token after an
            # idle spell (its first reading in half a second) would otherwise wait for.
            reading = self._core_share is not None and self._core_share.due()
            if not self._running or reading:
                self._outbox.flush()
            if reading:  # between readings the count stays as it is
                self._follow_free_cores()

    def _wait_idle(self) -> None:
        """With the lock held and nothing to do: waits to be woken, reading the machine's load meanwhile when the
        thread count adapts to it (CoreShare). The reading runs without the lock: a request is queued meanwhile and
        waits for one reading at most (about a millisecond)."""
        core_share = self._core_share
        timeout = core_share.seconds_to_idle_reading() if core_share is not None else None
        if self._lock.wait(timeout) or self._stopping or self._waiting:
            return
        self._lock.release()
        try:
            self._follow_free_cores()
        except Exception:  # nothing on the idle path may end the scheduler thread
            self._stop_measuring()
        finally:
            self._lock.acquire()

    def _admit(self) -> None:
        """Gives free slots to waiting sequences. A sequence starts from the free slot that holds most of its
        prompt, or from a copy of a busy slot's cache when that holds at least `_SHARE_MIN` more tokens of it
        (the n choices of one request, requests with one long system prompt). A sequence whose prompt another
        is still reading waits for it, then copies its cache and samples its first token from the same logits
        (as llama-server does for n choices), so greedy choices of one request agree."""
        deferred: list[_Sequence] = []
        while self._waiting:
            free = [slot for slot in self._slots if not slot.busy]
            if not free:
                break
            sequence = self._waiting.popleft()
            if sequence.cancelled:
                continue
            prompt = sequence.prompt
            # Keep at least the last prompt token to decode: its logits give the first sampled token. Scoring
            # needs logits at every position, so it reuses nothing.
            usable = 0 if sequence.scoring else len(prompt) - 1
            held = {free_slot.seq_id: min(_common_prefix(free_slot.cached, prompt), usable) for free_slot in free}
            slot = max(free, key=lambda free_slot: held[free_slot.seq_id])
            beside = self._slot_beside_busy(free, held, usable)
            if held[slot.seq_id] - held[beside.seq_id] < _SHARE_MIN:
                slot = beside  # a few shared tokens are not worth a slot that splits the batch
            reuse = held[slot.seq_id]
            donor, donor_reuse, reading = self._donor(sequence, usable)
            if donor is None and reading - reuse >= _SHARE_MIN:
                deferred.append(sequence)
                continue
            if donor is not None and donor_reuse - reuse >= _SHARE_MIN:
                slot = beside
                self._copy_cache(donor.slot, slot)  # type: ignore[arg-type]
                reuse = donor_reuse
            else:
                donor = None
            self._trim(slot, reuse)
            slot.busy = True
            sequence.slot = slot
            sequence.feed = prompt[reuse:]
            sequence.cached_prompt_tokens = reuse
            self.prompt_tokens_decoded += len(sequence.feed)
            self.prompt_tokens_cached += reuse
            try:
                if self._draws_in_graph(sequence):
                    sequence.in_graph = self._attach(self._make_sampler(sequence.params), slot)
                if sequence.in_graph is None and not sequence.scoring:
                    self._make_draw_here(sequence)
            except Exception as exc:  # fails this sequence, not the thread that serves them all
                log.exception("the sequence's sampler could not be built")
                self._outbox.put(sequence, exc)
                self._release(sequence)
                continue
            self._running.append(sequence)
            if not sequence.feed and donor is not None:
                sequence.logits_row = donor.logits_row
                self._sample(sequence)
        self._waiting.extendleft(reversed(deferred))

    def _slot_beside_busy(self, free: list[_Slot], held: Mapping[int, int], usable: int) -> _Slot:
        """The free slot that keeps the busy ones closest together (without a unified KV cache one graph
        computation covers only consecutive ids): a hole between them, else the nearest past either end. Of
        equally near ones, one that holds all of the prompt it can (`held` by sequence id; the prompt sent again,
        however short: several at once read again take several steps' time), else the one whose cached prefix is
        shortest, so that other conversations keep theirs (not given up for a shared system prompt's tokens)."""
        busy = [slot.seq_id for slot in self._slots if slot.busy]
        low, high = (min(busy), max(busy)) if busy else (0, len(self._slots))

        def preference(slot: _Slot) -> tuple[int, bool, int, int]:
            whole = usable > 0 and held[slot.seq_id] == usable
            return (max(low - slot.seq_id, slot.seq_id - high, 0), not whole, len(slot.cached), slot.seq_id)

        return min(free, key=preference)

    def _compact(self) -> None:
        """Moves running sequences into consecutive slots when finished ones left holes between them, so that
        a step stays one graph computation (llama.cpp splits a batch wherever sequence ids skip one). The
        window of slots needing fewest moves is chosen; each move copies a whole per-sequence cache, so a
        sequence about to finish is never moved (and holds its place until it does)."""
        busy = [slot for slot in self._slots if slot.busy]
        count = len(busy)
        if count < 2 or busy[-1].seq_id - busy[0].seq_id + 1 == count:
            self._apart_steps = 0
            return
        self._apart_steps += 1
        if self._apart_steps < _SETTLE_STEPS:
            return
        by_slot = {id(sequence.slot): sequence for sequence in self._running if sequence.slot is not None}
        best: tuple[int, int] | None = None
        for start in range(len(self._slots) - count + 1):
            outside = [slot for slot in busy if not start <= slot.seq_id < start + count]
            movable = all(_worth_moving(by_slot.get(id(slot))) for slot in outside)
            if movable and (best is None or len(outside) < best[0]):
                best = (len(outside), start)
        if best is None:
            return
        start = best[1]
        holes = [slot for slot in self._slots[start : start + count] if not slot.busy]
        movers = [slot for slot in busy if not start <= slot.seq_id < start + count]
        for source, target in zip(movers, holes, strict=True):
            sequence = by_slot[id(source)]
            self._copy_cache(source, target)  # the source keeps its copy as a cached prefix
            source.busy, target.busy = False, True
            if sequence.in_graph is not None:
                self._move_in_graph(sequence, source, target)
            sequence.slot = target
        self._apart_steps = 0
        log.debug("moved %d sequences into slots %d-%d", len(movers), start, start + count - 1)

    def _move_in_graph(self, sequence: _Sequence, source: _Slot, target: _Slot) -> None:
        """A chain is given to llama.cpp once (it asserts so): the moved sequence's is cloned, random state and
        all, for its new sequence id."""
        assert sequence.in_graph is not None
        lib = native.lib()
        clone = SamplerChain(lib.llama_sampler_clone(sequence.in_graph.chain))
        self._detach(sequence.in_graph, source)
        sequence.in_graph = self._attach(clone, target)
        if sequence.in_graph is None:
            self._make_draw_here(sequence)

    def _donor(self, sequence: _Sequence, usable: int) -> tuple[_Sequence | None, int, int]:
        """The running sequence whose cache holds most of `sequence`'s prompt (and how much of it it holds:
        all of it when its last decode ended exactly there, so its logits are shared too), or None with how
        much of the prompt a sequence still reading its own will hold."""
        prompt = sequence.prompt
        donor: _Sequence | None = None
        held_most = reading = 0
        # A draw in the graph leaves no logits here, and reads only its own sequence's: such a sequence neither
        # lends its last logits nor borrows another's.
        share_logits = not sequence.scoring and not self._draws_in_graph(sequence)
        for running in self._running:
            assert running.slot is not None
            if share_logits and running.in_graph is None and running.logits_row >= 0 and running.slot.cached == prompt:
                return running, len(prompt), 0
            held = min(_common_prefix(running.slot.cached, prompt), usable)
            if held > held_most:
                donor, held_most = running, held
            if running.feed and len(running.slot.cached) < len(running.prompt):
                reading = max(reading, min(_common_prefix(running.prompt, prompt), usable))
        if reading - held_most >= _SHARE_MIN:
            return None, 0, reading
        return donor, held_most, 0

    def _copy_cache(self, source: _Slot, target: _Slot) -> None:
        # llama.cpp copies whole per-sequence caches between streams (at the next decode); callers trim after.
        lib = native.lib()
        lib.llama_memory_seq_cp(lib.llama_get_memory(self._context), source.seq_id, target.seq_id, -1, -1)
        target.cached = source.cached[:]

    def _trim(self, slot: _Slot, keep: int) -> None:
        lib = native.lib()
        memory = lib.llama_get_memory(self._context)
        if not lib.llama_memory_seq_rm(memory, slot.seq_id, keep, -1):
            lib.llama_memory_seq_rm(memory, slot.seq_id, -1, -1)
            keep = 0
        slot.cached = slot.cached[:keep]

    def _retire_cancelled(self) -> None:
        for sequence in [s for s in self._running if s.cancelled]:
            self._release(sequence)

    def _release(self, sequence: _Sequence) -> None:
        if sequence in self._running:
            self._running.remove(sequence)
        self._free_sampler(sequence)
        if sequence.slot is not None:
            sequence.slot.busy = False
            sequence.slot = None

    def _free_sampler(self, sequence: _Sequence) -> None:
        if sequence.sampler is not None:
            sequence.sampler.free()
            sequence.sampler = None
        if sequence.in_graph is not None:
            self._detach(sequence.in_graph, sequence.slot)
            sequence.in_graph = None

    def _draws_in_graph(self, sequence: _Sequence) -> bool:
        """Whether the sequence's tokens are drawn in llama.cpp's graph: with `backend_sampling`, for what its
        samplers do there (temperature, the draw, greedy, logit_bias) and when no logits are wanted here."""
        params = sequence.params
        return (
            self._backend_sampling
            and not sequence.scoring
            and params.top_logprobs is None
            and params.json_schema is None
            and params.call_grammar is None
            and params.top_p >= 1.0
            and not params.presence_penalty
            and not params.frequency_penalty
        )

    def _detach(self, sampler: SamplerChain, slot: _Slot | None) -> None:
        """Takes the chain back from the slot's sequence id (llama.cpp would run a freed one) and frees it."""
        if slot is not None:
            native.lib().llama_set_sampler(self._context, slot.seq_id, None)
        sampler.free()

    def _attach(self, sampler: SamplerChain, slot: _Slot) -> SamplerChain | None:
        """Gives the slot's sequence id the chain to run in the graph; None (the chain freed) where llama.cpp
        cannot (a split model), and the draw stays here."""
        if native.lib().llama_set_sampler(self._context, slot.seq_id, sampler.chain):
            return sampler
        sampler.free()
        return None

    def _step(self) -> None:
        tokens, positions, outputs, sequence_ids = (
            self._batch_tokens,
            self._batch_positions,
            self._batch_outputs,
            self._batch_sequence_ids,
        )
        rows = 0
        fed: list[tuple[_Sequence, list[int]]] = []
        for sequence in self._running:
            sequence.logits_row = -1  # rows describe the coming decode only
        # Generating sequences first (one token each), so that long prompts never stall running streams; each
        # group in slot order: without a unified KV cache llama.cpp puts sequences in one ubatch (one graph
        # computation) only while their ids rise by one in batch order, so admission order would split a step.
        ordered = (
            sorted(self._running, key=lambda s: (len(s.feed) > 1, s.slot.seq_id if s.slot else 0))
            if len(self._running) > 1
            else self._running
        )
        if ordered and len(ordered[-1].feed) > 1:  # a prompt chunk takes up to a millisecond to lay out
            self._outbox.flush()
        for sequence in ordered:
            room = self._batch_size - rows
            if room <= 0:
                break
            assert sequence.slot is not None
            take = sequence.feed[:room]
            start = len(sequence.slot.cached)
            end = rows + len(take)
            seq_id = sequence.slot.seq_id
            if end - rows == 1:  # a generating sequence's one token: single writes cost less than slices
                tokens[rows] = take[0]
                positions[rows] = start
                outputs[rows] = 0
                sequence_ids[rows][0] = seq_id
            else:
                tokens[rows:end] = take
                positions[rows:end] = np.arange(start, start + len(take))
                outputs[rows:end] = 0
                for row in range(rows, end):
                    sequence_ids[row][0] = seq_id
            if sequence.scoring:
                outputs[rows:end] = 1
                sequence.score_rows = [(row, start + row - rows) for row in range(rows, end)]
            rows = end
            if len(take) == len(sequence.feed):
                outputs[rows - 1] = 1
                sequence.logits_row = rows - 1
            else:
                sequence.logits_row = -1
            fed.append((sequence, take))
        batch = self._batch
        batch.n_tokens = rows
        # What the last step (and admission) produced is handed to the event loop only now: woken, it needs the
        # GIL, which llama_decode releases at once, so it runs instead of waking, waiting for the GIL and being
        # woken again (two futex waits a streamed token more, measured with strace).
        self._outbox.flush()
        status = native.lib().llama_decode(self._context, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        for sequence, take in fed:
            assert sequence.slot is not None
            sequence.slot.cached.extend(take)
            sequence.feed = sequence.feed[len(take) :]
            if sequence.cancelled:
                continue
            if sequence.scoring:
                self._score_rows(sequence)
            elif sequence.logits_row >= 0:
                self._sample(sequence)

    def _follow_free_cores(self) -> None:
        """Decode the next steps with the threads CoreShare allows now (llama.cpp takes a new count between two
        decodes)."""
        core_share = self._core_share
        if core_share is None:
            return
        try:
            threads = core_share.threads()
        except Exception:  # measuring must never fail a step
            self._stop_measuring()
            return
        if threads != self._decode_threads:
            log.debug("%s: %d threads (others busy: %.2f cores)", self.spec.id, threads, core_share.others_busy)
            native.lib().llama_set_n_threads(self._context, threads, threads)
            self._decode_threads = threads

    def _stop_measuring(self) -> None:
        """Called from an `except` block: keeps the thread count as it is and stops measuring."""
        log.exception("%s: cannot read the machine's load; threads stay at %d", self.spec.id, self._decode_threads)
        self._core_share = None

    def _score_rows(self, sequence: _Sequence) -> None:
        """Each row's logits give the probability of the prompt token that follows it."""
        top = sequence.params.top_logprobs or 0
        for row, position in sequence.score_rows:
            if position + 1 < len(sequence.prompt):
                token = sequence.prompt[position + 1]
                logprob, alternatives = self._logprobs(row, token, top)
                self._outbox.put(sequence, SampledToken(token, self.token_piece(token), logprob, alternatives))
        if not sequence.feed:
            self._outbox.put(sequence, _END)
            self._release(sequence)

    def _sample(self, sequence: _Sequence) -> None:
        params = sequence.params
        possible = True
        if sequence.in_graph is not None:
            drawn_in_graph = self._drawn_in_graph(sequence)
            if drawn_in_graph is None:  # fails this sequence, not the step's others
                self._outbox.put(sequence, RuntimeError("llama.cpp drew no token for the sequence"))
                self._release(sequence)
                return
            token = drawn_in_graph
        elif sequence.draw is not None:
            token = sequence.draw.sample(self._logits(sequence.logits_row))
        elif sequence.sampler is None:
            token = self._greedy(sequence.logits_row, avoid_eog=params.ignore_eos)
        else:
            assert self._chain_draw is not None
            drawn = self._chain_draw.draw(sequence.sampler, self._logits(sequence.logits_row))
            # No token possible (a finished grammar with the end banned): the sequence ends as at an end token.
            possible = drawn is not None
            token = drawn if drawn is not None else (self._eog_tokens[0] if self._eog_tokens else 0)
        sequence.generated += 1
        logprob: float | None = None
        alternatives: tuple[TokenLogprob, ...] = ()
        if params.top_logprobs is not None:
            logprob, alternatives = self._logprobs(sequence.logits_row, token, params.top_logprobs)
        finish = None
        call_opened = False
        if not possible or token in self._eog_set:
            finish = "stop"
            piece = b""
        else:
            piece = self._markup_piece(token) if token in params.markup_tokens else self.token_piece(token)
            if sequence.generated >= params.max_tokens:
                finish = "length"
            elif sequence.call_watch is not None:
                call_opened = self._hold_call(sequence, token, piece)
        sampled = SampledToken(token, piece, logprob, alternatives, finish, call_opened)  # type: ignore[arg-type]
        self._outbox.put(sequence, sampled)
        if finish is None:
            sequence.feed = [token]
        else:
            self._release(sequence)

    def _drawn_in_graph(self, sequence: _Sequence) -> int | None:
        """The token llama.cpp drew for the sequence in the last decode, accepted by its chain. Where the device
        lacks an operation of a member, llama.cpp ran the members before it in the graph and left the rest (and the
        draw) undone: llama_sampler_sample runs those here on what the graph left. None when it left nothing."""
        assert sequence.in_graph is not None
        lib = native.lib()
        token = int(lib.llama_get_sampled_token_ith(self._context, sequence.logits_row))
        if token >= 0:
            lib.llama_sampler_accept(sequence.in_graph.chain, token)
            return token
        row = sequence.logits_row
        # Without what the graph left, llama_sampler_sample would read the raw logits, which llama.cpp does not copy
        # when every sequence of the batch draws in the graph: it asserts, and the process ends
        if not lib.llama_get_sampled_logits_ith(self._context, row) and not lib.llama_get_sampled_probs_ith(
            self._context, row
        ):
            log.error("%s: llama.cpp drew no token for batch row %d", self.spec.id, row)
            return None
        if not self._warned_partial_draws:
            log.warning("%s: llama.cpp's device cannot draw this chain whole; the rest is drawn here", self.spec.id)
            self._warned_partial_draws = True
        return int(lib.llama_sampler_sample(sequence.in_graph.chain, self._context, row))

    def _logits(self, row: int) -> np.ndarray:
        """A batch row's logits, read in place from llama.cpp's buffer (until the next decode). Views are kept
        by address: making one took 20-25 us a token, of the 0.3 ms a step spends outside llama_decode. Read-only:
        a donor's row may be sampled again for the choices sharing it."""
        address = self._logits_address(self._context, row)
        if address is None:
            raise RuntimeError(f"llama.cpp has no logits for batch row {row}")
        view = self._logits_views.get(address)
        if view is None:
            if len(self._logits_views) >= 2 * self._batch_size:  # a reallocated buffer: drop the old addresses
                self._logits_views.clear()
            pointer = ctypes.cast(address, ctypes.POINTER(ctypes.c_float))
            view = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
            view.flags.writeable = False
            self._logits_views[address] = view
        return view

    def _greedy(self, row: int, *, avoid_eog: bool) -> int:
        """The most likely token, as llama.cpp's greedy sampler picks it (the first of equals), read straight
        from the logits: the sampler chain copies all of them into a candidate array first."""
        logits = self._logits(row)
        token = int(np.argmax(logits))
        if avoid_eog and token in self._eog_set:
            masked = logits.copy()
            masked[self._eog_tokens] = -np.inf
            token = int(np.argmax(masked))
        return token

    def _logprobs(self, row: int, token: int, top: int) -> tuple[float, tuple[TokenLogprob, ...]]:
        logits = self._logits(row).astype(np.float64)
        shifted = logits - np.max(logits)
        logprobs = shifted - np.log(np.exp(shifted).sum())
        alternatives: tuple[TokenLogprob, ...] = ()
        if top > 0:
            best = np.argpartition(-logprobs, top)[:top]
            best = best[np.argsort(-logprobs[best])]
            alternatives = tuple(TokenLogprob(int(t), float(logprobs[t])) for t in best)
        return float(logprobs[token]), alternatives

    def _make_draw_here(self, sequence: _Sequence) -> None:
        """What draws the sequence's tokens in this process: numpy's draw, an argmax (nothing to make), or
        llama.cpp's sampler chain."""
        if _plain_draw(sequence.params):
            sequence.draw = self._make_draw(sequence.params)
        elif not _plain_greedy(sequence.params):
            sequence.sampler = self._make_sampler(sequence.params)

    def _make_draw(self, params: SamplingParams) -> FullDistributionSampler:
        banned = self._eog_tokens if params.ignore_eos else ()
        return FullDistributionSampler(self._n_vocab, params.temperature, params.logit_bias, banned, params.seed)

    def _make_sampler(self, params: SamplingParams) -> SamplerChain:
        lib = native.lib()
        # First, so that nothing is left to free when it fails (checked when queued, so not expected to).
        grammar = None if params.json_schema is None else self._new_grammar(_grammar_rules(params.json_schema))
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        logit_bias = dict(params.logit_bias)
        if params.ignore_eos:
            logit_bias.update({token: -math.inf for token in self._eog_tokens})
        if logit_bias:
            biases = (native.llama_logit_bias * len(logit_bias))()
            for index, (token, bias) in enumerate(logit_bias.items()):
                biases[index].token = token  # type: ignore[assignment]
                biases[index].bias = bias
            lib.llama_sampler_chain_add(
                chain, lib.llama_sampler_init_logit_bias(self._n_vocab, len(logit_bias), biases)
            )
        if params.presence_penalty or params.frequency_penalty:
            # Over every token generated so far, as OpenAI's penalties count them (the window must be positive:
            # llama.cpp reads -1 as 0, an empty sampler, and with it the penalties did nothing).
            lib.llama_sampler_chain_add(
                chain,
                lib.llama_sampler_init_penalties(
                    self._n_vocab, self._context_length, 1.0, params.frequency_penalty, params.presence_penalty
                ),
            )
        if params.temperature < _GREEDY_BELOW:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            if params.top_p < 1.0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(params.temperature))
            seed = native.DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
            if params.seed is not None and seed == native.DEFAULT_SEED:  # llama.cpp reads that one as "random"
                seed -= 1
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        banned = frozenset(self._eog_tokens) if params.ignore_eos else frozenset()
        # Asking the grammar about the drawn token alone is exact unless top_p cuts the distribution (chain.py).
        grammar_first = params.temperature >= _GREEDY_BELOW and params.top_p < 1.0
        return SamplerChain(chain, grammar, grammar_first=grammar_first, banned=banned)


def _grammar_rules(schema: Mapping[str, object], parts: Mapping[str, str] | None = None) -> str:
    try:
        return native.json_grammar(schema, parts)
    except Exception as exc:  # llama-cpp-python's converter asserts (an unknown type, a pattern, a $ref)
        raise UnusableSchema(str(exc) or type(exc).__name__) from None


def _call_grammar_rules(grammar: CallGrammar) -> str:
    return call_rules(grammar, _grammar_rules(grammar.schema, parameter_parts(grammar)))


def _worth_moving(sequence: _Sequence | None) -> bool:
    if sequence is None or sequence.scoring:
        return False
    return sequence.params.max_tokens - sequence.generated >= _SHARE_MIN


def _plain_draw(params: SamplingParams) -> bool:
    """A draw from the whole distribution at a temperature (logit_bias allowed): numpy does it faster than
    llama.cpp's sampler chain."""
    return (
        params.temperature >= _GREEDY_BELOW
        and params.top_p >= 1.0
        and not params.presence_penalty
        and not params.frequency_penalty
        and params.json_schema is None
    )


def _plain_greedy(params: SamplingParams) -> bool:
    """Temperature 0 (or below _GREEDY_BELOW) with nothing that reshapes the logits: an argmax needs no llama.cpp
    sampler."""
    return (
        params.temperature < _GREEDY_BELOW
        and not params.logit_bias
        and not params.presence_penalty
        and not params.frequency_penalty
        and params.json_schema is None
    )


def _common_prefix(left: list[int], right: list[int]) -> int:
    """How many leading tokens the two lists share (slice comparisons run in C: prompts can be long)."""
    size = min(len(left), len(right))
    if left[:size] == right[:size]:
        return size
    same, differs = 0, size
    while differs - same > 1:
        middle = (same + differs) // 2
        if left[:middle] == right[:middle]:
            same = middle
        else:
            differs = middle
    return same


def create_engine(spec: ModelSpec) -> LlamaCppEngine:
    return LlamaCppEngine(spec)
