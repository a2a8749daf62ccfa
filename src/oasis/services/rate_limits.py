"""Rate limits per project and per key, as OpenAI's: requests and tokens a minute, reported on every reply in the
`x-ratelimit-*` headers, and a 429 `rate_limit_exceeded` with `Retry-After` past them.

Tokens are counted when a request is admitted, as OpenAI estimates them: the prompt's characters over four, plus
`max_tokens` (or `max_completion_tokens`) times `n` (or `best_of`, when larger). An Assistants run's turns count
against its project's tokens too (their prompts as tokenized, plus what is left of the run's completion budget).
Counted in Redis when `redis_url` is set, so that every replica counts against the same limits; in the process
otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from oasis.errors import OasisError
from oasis.services.keys import Principal
from oasis.settings import Limits, RateLimitSettings
from oasis.storage import projects
from oasis.storage.db import Database
from oasis.storage.rate_buckets import RateBuckets, Take

log = logging.getLogger("oasis.rate_limits")

# Endpoints whose bodies spend tokens, and how long a project-name lookup is trusted (a project made later shows).
CHAT_COMPLETIONS = "/v1/chat/completions"
# The most tokens a compaction's summary takes (services/responses/compaction.py uses it).
SUMMARY_TOKENS = 512
TOKEN_PATHS = (CHAT_COMPLETIONS, "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/responses/compact")
_NAMES_SECONDS = 30.0
# Counts past this are all "more than any limit": kept small enough to print in a 429 and to multiply.
_COUNT_CEILING = 10**15
_COUNT_DIGITS = 16


def _count(value: Any) -> int | None:
    """A count as the request schema takes it (an int, an integral float, a string of digits), never below 0."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and len(value) > _COUNT_DIGITS:
        return _COUNT_CEILING  # int() refuses over 4300 digits, and any such count is past every limit anyway
    if (isinstance(value, float) and value.is_integer()) or (isinstance(value, str) and value.strip().isdigit()):
        value = int(value)
    return min(max(0, value), _COUNT_CEILING) if isinstance(value, int) else None


def _prompt_text(path: str, body: dict[str, Any]) -> Any:
    """What a request sends the model as text: chat's text parts (not image or audio data), tools, prompts."""
    if path.endswith("/chat/completions"):
        texts: list[Any] = [body.get("tools"), body.get("functions")]
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, list):
                content = [
                    part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"
                ]
            texts += [content, message.get("tool_calls")]
        return texts
    # a continued response's earlier turns are stored, not in the body: uncounted (as a configured prompt's own
    # text; its variables' text is counted)
    if path.endswith(("/responses", "/responses/compact")):
        prompt = body.get("prompt")
        variables = prompt.get("variables") if isinstance(prompt, dict) else None
        filled = (
            [value if isinstance(value, str) else _texts_of([value]) for value in variables.values()]
            if isinstance(variables, dict)
            else None
        )
        return [body.get("instructions"), _response_texts(body.get("input")), body.get("tools"), filled]
    return body.get("input") if path.endswith("/embeddings") else body.get("prompt")


def _texts_of(parts: Any) -> Any:
    """The text of content parts (not image or file data); anything else as it is."""
    if not isinstance(parts, list):
        return parts
    return [part.get("text") for part in parts if isinstance(part, dict) and isinstance(part.get("text"), str)]


def _response_texts(given: Any) -> Any:
    """What a response's input sends the model as text: its messages' text parts, calls' arguments, outputs, and
    compactions' summaries."""
    if not isinstance(given, list):
        return given
    texts: list[Any] = []
    for item in given:
        if isinstance(item, dict):
            texts += [_texts_of(item.get("content")), item.get("arguments"), _texts_of(item.get("output"))]
            texts.append(item.get("encrypted_content"))  # a compaction's summary, which the model reads
    return texts


def estimate_tokens(path: str, body: Any) -> int:
    """What a request will spend, counted before it runs (a body that is not what the endpoint takes: 0, its
    validation answers it)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages", []), list):
        return 0
    most = _count(body.get("max_output_tokens") if path.endswith("/responses") else body.get("max_completion_tokens"))
    if path.endswith("/responses/compact"):
        most = SUMMARY_TOKENS  # the summary's, whatever the body says
    if most is None:
        most = _count(body.get("max_tokens"))
    if most is None and path.endswith("/completions") and not path.endswith("/chat/completions"):
        most = 16  # legacy completions' default
    # best_of candidates are all generated (legacy completions), however few are returned
    choices = max(_count(body.get("n")) or 1, _count(body.get("best_of")) or 1)
    return estimate_prompt_tokens(path, body) + (most or 0) * choices


def estimate_prompt_tokens(path: str, body: dict[str, Any]) -> int:
    """A request's prompt in tokens, estimated from its characters (four a token)."""
    prompt = _prompt_text(path, body)
    return math.ceil(len(json.dumps(prompt, ensure_ascii=False)) / 4) if prompt is not None else 0


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    return f"{int(seconds // 60)}m{round(seconds % 60)}s"


@dataclass
class _Names:
    ids: dict[str, str]
    read_at: float


class RateLimiter:
    def __init__(self, settings: RateLimitSettings, db: Database, buckets: RateBuckets) -> None:
        self._settings = settings
        self._db = db
        self._buckets = buckets
        self._names: _Names | None = None
        self._warned_until = 0.0

    @property
    def enabled(self) -> bool:
        limits = self._settings
        return any(
            limit is not None
            for entry in (limits, *limits.projects.values(), *limits.keys.values())
            for limit in (entry.requests_per_minute, entry.tokens_per_minute)
        )

    async def _limits_of(self, principal: Principal) -> tuple[str, Limits]:
        """The bucket owner and its limits: the key's own, else its project's, else every project's."""
        if principal.key_id is not None and principal.key_id in self._settings.keys:
            return f"key:{principal.key_id}", self._settings.keys[principal.key_id]
        named = self._settings.projects
        if principal.project_id in named:
            return f"project:{principal.project_id}", named[principal.project_id]
        if named:
            if self._names is None or time.monotonic() - self._names.read_at > _NAMES_SECONDS:
                async with self._db.session() as session:
                    ids = await projects.project_ids(session, list(named))
                self._names = _Names(ids, time.monotonic())
            for name, project_id in self._names.ids.items():
                if project_id == principal.project_id:
                    return f"project:{project_id}", named[name]
        return f"project:{principal.project_id}", self._settings

    async def admit(self, principal: Principal, tokens: int, *, request: bool = True) -> dict[str, str]:
        """Takes one request (unless `request` is False: work a request handed over, such as a run's turns) and
        `tokens` from the caller's limits; the headers to send with the reply, or a 429."""
        owner, limits = await self._limits_of(principal)
        takes, kinds = [], []
        if request and limits.requests_per_minute is not None:
            takes.append(Take(f"{owner}:requests", limits.requests_per_minute, 1))
            kinds.append("requests")
        if limits.tokens_per_minute is not None:
            if tokens > limits.tokens_per_minute:
                raise OasisError(
                    429,
                    f"Request too large: tokens per minute (TPM): Limit {limits.tokens_per_minute}, Requested "
                    f"{tokens}. Send fewer tokens (a shorter prompt, a smaller max_tokens).",
                    type="tokens",
                    code="rate_limit_exceeded",
                )
            takes.append(Take(f"{owner}:tokens", limits.tokens_per_minute, tokens))
            kinds.append("tokens")
        if not takes:
            return {}
        try:
            outcome = await self._buckets.take(takes)
        except Exception as exc:  # Redis away: serving on unlimited beats refusing every request
            if time.monotonic() > self._warned_until:
                log.warning("rate limits not counted: %s: %s", type(exc).__name__, exc)
                self._warned_until = time.monotonic() + 60
            return {}
        headers: dict[str, str] = {}
        for take, kind, level in zip(takes, kinds, outcome.levels, strict=True):
            headers[f"x-ratelimit-limit-{kind}"] = str(take.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level)))
            headers[f"x-ratelimit-reset-{kind}"] = _duration((take.limit - level) * 60.0 / take.limit)
        if not outcome.allowed:
            short = [
                (kind, take)
                for take, kind, level in zip(takes, kinds, outcome.levels, strict=True)
                if level < take.cost
            ]
            kind, take = short[0]
            unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
            used = take.limit - max(0, math.floor(dict(zip(kinds, outcome.levels, strict=True))[kind]))
            raise OasisError(
                429,
                f"Rate limit reached for {owner.split(':', 1)[0]} {owner.split(':', 1)[1]} on {unit}: Limit "
                f"{take.limit}, Used {used}, Requested {take.cost}. Please try again in "
                f"{_duration(outcome.wait_seconds)}.",
                type=kind,
                code="rate_limit_exceeded",
                headers={**headers, "retry-after": str(max(1, math.ceil(outcome.wait_seconds)))},
            )
        return headers

    async def close(self) -> None:
        await self._buckets.close()
