"""Hybrid search over a vector store: the nearest chunks by embedding and the best chunks by keywords are the
candidates, each scored by a relevance comparable across queries (relevance.py) and ranked by it. The database
holds every chunk and vector; each process keeps a per-store copy of the vectors (and, for large stores, an HNSW
index) keyed by the store's content version, so replicas never serve stale hits.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oasis.errors import invalid_request
from oasis.services.embeddings.service import EmbeddingService
from oasis.services.vector_stores.filters import matches
from oasis.services.vector_stores.relevance import (
    BACKGROUND_PASSAGES,
    background_spread,
    keyword_coverage,
    query_stems,
    relevance,
    stems,
)
from oasis.services.vector_stores.service import VectorStoreService, is_expired
from oasis.storage import vector_search as rows
from oasis.storage.clock import now
from oasis.storage.db import Database, Session
from oasis.storage.tables import VectorStore

log = logging.getLogger("oasis.search")

INDEX_RETRY_SECONDS = 60.0
# In a large store, a query word found in more than this share of its chunks is treated like a stopword: its
# idf adds almost nothing to a BM25 score, but ranking every chunk that holds it costs more than the rest of
# the search together.
COMMON_WORD_SHARE = 0.05
COMMON_WORD_MIN_CHUNKS = 1_000
_WORDS = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Hit:
    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, Any]


@dataclass
class _StoreVectors:
    version: int
    chunk_ids: np.ndarray
    file_seqs: np.ndarray  # each chunk's file row: filters narrow the search by file
    matrix: np.ndarray
    index: Any = None
    building: bool = False
    # document frequencies of query words, capped at the common-word limit; valid for this content version
    word_counts: dict[str, int] = field(default_factory=dict)
    retry_at: float = 0.0  # monotonic time before which a failed index build is not tried again
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nbytes(self) -> int:
        # An HNSW index holds a copy of the vectors plus its links: count it as as much again.
        own = self.matrix.nbytes + self.chunk_ids.nbytes + self.file_seqs.nbytes
        return own * (2 if self.index is not None else 1)


def _one_blas_thread() -> None:
    """Search multiplies one query by a matrix: BLAS threads gain nothing there, but their spin-waiting fights
    the embedding engine's threads for the cores (p95 search latency at 10k chunks: 111 ms with them, 28 without)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class VectorSearch:
    def __init__(
        self,
        db: Database,
        stores: VectorStoreService,
        embeddings: EmbeddingService,
        index_threshold: int,
        cache_bytes: int = 1 << 30,
    ) -> None:
        self._db = db
        self._stores = stores
        self._embeddings = embeddings
        self._index_threshold = index_threshold
        # Store id -> its vectors, least recently searched first. Bounded, so that stores deleted here or by
        # another replica, and stores nobody searches any more, leave memory in time.
        self._cache: OrderedDict[str, _StoreVectors] = OrderedDict()
        self._cache_bytes = cache_bytes
        # Embedding model -> the background passages' vectors (see relevance.py).
        self._backgrounds: dict[str, np.ndarray] = {}
        _one_blas_thread()

    async def search(
        self,
        project_id: str,
        store_id: str,
        queries: list[str],
        *,
        max_results: int,
        filters: dict[str, Any] | None,
        score_threshold: float,
    ) -> list[Hit]:
        store = await self._stores.store_row(project_id, store_id)
        if is_expired(store):
            raise invalid_request(f"Vector store {store_id} has expired and can no longer be searched.")
        await self._touch(store)
        vectors = (await self._embeddings.embed(store.embedding_model, queries, "query", param="query")).vectors
        background = await self._background(store.embedding_model)
        depth = max(30, 3 * max_results)
        cached = await self._vectors(store)
        # Filters narrow what is searched, as OpenAI's do: filtering the best candidates afterwards would leave
        # a search for one rarely relevant file with nothing.
        allowed = None if filters is None else await self._files_matching(store_id, filters)
        if allowed is not None and not allowed:
            return []
        # The products and the scoring run in a thread: a request with many queries over a large store must not
        # hold the event loop (every other request) for its whole length.
        candidates = await asyncio.to_thread(self._nearest_to_all, cached, vectors, depth, allowed)
        # One session for the keyword queries and the hit details: each checkout is a round trip on PostgreSQL.
        async with self._db.session() as session:
            for query in queries:
                candidates.update(dict.fromkeys(await self._keyword(session, store_id, cached, query, depth, allowed)))
            # Chunks of a file deleted meanwhile are missing from the details, and so from the hits.
            details = await rows.chunk_details(session, list(candidates))
        scores = await asyncio.to_thread(self._scores, cached, vectors, background, queries, details)
        ranked = sorted((chunk for chunk in details if scores[chunk] >= score_threshold), key=lambda c: -scores[c])
        return [
            Hit(file_id, filename, round(scores[chunk], 6), chunk_text, attributes)
            for chunk in ranked[:max_results]
            for file_id, filename, chunk_text, attributes in [details[chunk]]
        ]

    @staticmethod
    def _scores(
        cached: _StoreVectors,
        vectors: np.ndarray,
        background: np.ndarray,
        queries: list[str],
        details: dict[int, tuple[str, str, str, dict[str, Any]]],
    ) -> dict[int, float]:
        """Each candidate's relevance: its best over the queries (see relevance.py)."""
        chunk_ids = list(details)
        if not chunk_ids:
            return {}
        positions = np.searchsorted(cached.chunk_ids, chunk_ids)
        positions = np.minimum(positions, max(len(cached.chunk_ids) - 1, 0))
        # A chunk newer than the vectors held here (added since they were loaded) counts by its keywords only.
        known = cached.chunk_ids[positions] == np.asarray(chunk_ids) if len(cached.chunk_ids) else np.zeros(0, bool)
        similarities = cached.matrix[positions] @ np.asarray(vectors).T if len(cached.chunk_ids) else None
        spreads = [background_spread(background, vector) for vector in vectors]
        wanted = [query_stems(query) for query in queries]
        scores: dict[int, float] = {}
        for row, chunk_id in enumerate(chunk_ids):
            chunk_stems = stems(details[chunk_id][2])
            best = 0.0
            for column, spread in enumerate(spreads):
                similarity = float(similarities[row, column]) if similarities is not None and known[row] else -1.0
                best = max(best, relevance(similarity, spread, keyword_coverage(wanted[column], chunk_stems)))
            scores[chunk_id] = best
        return scores

    async def _files_matching(self, store_id: str, filters: dict[str, Any]) -> list[int]:
        """The rows of the store's files whose attributes pass the filters."""
        async with self._db.session() as session:
            files = await rows.live_file_attributes(session, store_id)
        return [seq for seq, attributes in files if matches(filters, attributes)]

    async def _background(self, model: str) -> np.ndarray:
        """The background passages embedded with `model`, once per process."""
        found = self._backgrounds.get(model)
        if found is None:
            found = (await self._embeddings.embed(model, list(BACKGROUND_PASSAGES), "passage", param="query")).vectors
            self._backgrounds[model] = found
        return found

    async def _touch(self, store: VectorStore) -> None:
        # Searching keeps a store alive: expiry counts from the last activity.
        if store.last_active_at >= now() - 60:
            return
        async with self._db.session() as session:
            await rows.touch_store(session, store.id)
            await session.commit()

    # --- vectors ----------------------------------------------------------------------------------------

    async def _vectors(self, store: VectorStore) -> _StoreVectors:
        cached = self._cache.get(store.id)
        if cached is not None and cached.version == store.content_version:
            self._cache.move_to_end(store.id)
            if len(cached.chunk_ids) >= self._index_threshold:
                self._build_index_later(cached)  # after a failed build, once INDEX_RETRY_SECONDS have passed
            return cached
        async with self._db.session() as session:
            found = await rows.live_embeddings(session, store.id)
        ids = np.fromiter((row[0] for row in found), dtype=np.int64, count=len(found))
        file_seqs = np.fromiter((row[1] for row in found), dtype=np.int64, count=len(found))
        blob = b"".join(row[2] for row in found)
        matrix = np.frombuffer(blob, dtype="<f4").reshape(len(found), -1) if found else np.zeros((0, 1), np.float32)
        loaded = _StoreVectors(store.content_version, ids, file_seqs, matrix)
        self._cache[store.id] = loaded
        self._cache.move_to_end(store.id)
        self._evict(keep=store.id)
        if len(found) >= self._index_threshold:
            self._build_index_later(loaded)
        return loaded

    def _evict(self, keep: str) -> None:
        total = sum(vectors.nbytes for vectors in self._cache.values())
        for store_id in list(self._cache):
            if total <= self._cache_bytes:
                break
            if store_id != keep:
                total -= self._cache.pop(store_id).nbytes

    def _build_index_later(self, vectors: _StoreVectors) -> None:
        """Builds an HNSW index in a thread; exact search answers meanwhile."""
        with vectors.lock:
            if vectors.building or vectors.index is not None or time.monotonic() < vectors.retry_at:
                return
            vectors.building = True

        def build() -> None:
            try:
                import hnswlib

                index = hnswlib.Index(space="ip", dim=vectors.matrix.shape[1])
                index.init_index(max_elements=len(vectors.chunk_ids), ef_construction=100, M=16)
                index.add_items(vectors.matrix, np.arange(len(vectors.chunk_ids)))
                index.set_ef(128)
                vectors.index = index
            except Exception:  # exact search goes on answering; a later search tries to build again
                log.exception("building an HNSW index failed")
                vectors.retry_at = time.monotonic() + INDEX_RETRY_SECONDS
            finally:
                with vectors.lock:
                    vectors.building = False

        asyncio.get_running_loop().run_in_executor(None, build)

    @classmethod
    def _nearest_to_all(
        cls, cached: _StoreVectors, vectors: np.ndarray, depth: int, allowed: list[int] | None
    ) -> dict[int, None]:
        """The nearest chunks to each query, in order, without repeats."""
        mask = None if allowed is None else np.isin(cached.file_seqs, allowed)
        candidates: dict[int, None] = {}
        for vector in vectors:
            candidates.update(dict.fromkeys(cls._nearest(cached, vector, depth, mask)))
        return candidates

    @staticmethod
    def _nearest(vectors: _StoreVectors, query: np.ndarray, depth: int, mask: np.ndarray | None = None) -> list[int]:
        """The `depth` chunks nearest the query; among those `mask` marks, when given (exactly, by a product
        with just those rows: the HNSW index cannot be narrowed to them without walking most of it)."""
        rows_searched = np.flatnonzero(mask) if mask is not None else None
        count = len(vectors.chunk_ids) if rows_searched is None else len(rows_searched)
        if count == 0:
            return []
        depth = min(depth, count)
        if vectors.index is not None and rows_searched is None:
            labels, _ = vectors.index.knn_query(query.reshape(1, -1), k=depth)
            return [int(vectors.chunk_ids[label]) for label in labels[0]]
        matrix = vectors.matrix if rows_searched is None else vectors.matrix[rows_searched]
        scores = matrix @ query
        top = np.argpartition(-scores, depth - 1)[:depth]
        top = top[np.argsort(-scores[top])]
        if rows_searched is not None:
            top = rows_searched[top]
        return [int(vectors.chunk_ids[i]) for i in top]

    # --- keywords ---------------------------------------------------------------------------------------

    async def _keyword(
        self,
        session: Session,
        store_id: str,
        cached: _StoreVectors,
        query: str,
        depth: int,
        file_seqs: list[int] | None,
    ) -> list[int]:
        words = list(dict.fromkeys(word.lower() for word in _WORDS.findall(query)))[:32]
        if len(cached.chunk_ids) >= COMMON_WORD_MIN_CHUNKS:
            words = await self._without_common_words(session, store_id, cached, words)
        if not words:
            return []
        return await rows.keyword_ranked(session, store_id, words, depth, file_seqs)

    async def _without_common_words(
        self, session: Session, store_id: str, cached: _StoreVectors, words: list[str]
    ) -> list[str]:
        """Drops the words in more than COMMON_WORD_SHARE of the store's chunks (keeping the rarest if all are)."""
        cap = int(len(cached.chunk_ids) * COMMON_WORD_SHARE)
        unseen = [word for word in words if word not in cached.word_counts]
        if unseen:
            cached.word_counts.update(await rows.count_chunks_with(session, store_id, unseen, cap + 1))
        kept = [word for word in words if cached.word_counts[word] <= cap]
        if not kept and words:
            kept = [min(words, key=lambda word: cached.word_counts[word])]
        return kept
