"""The queries behind vector-store search: a store's live vectors, keyword ranking (SQLite FTS5 with BM25, or
PostgreSQL full text with ts_rank_cd), word frequencies, and the chunks' details."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.clock import now
from oasis.storage.tables import VectorStore

_LIVE_CHUNKS = (
    "FROM vector_store_chunks c JOIN vector_store_files f ON f.seq = c.file_seq "
    "WHERE c.vector_store_id = :store AND f.status = 'completed' AND f.deleted_at IS NULL"
)


def _is_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _any_of(session: AsyncSession, words: list[str]) -> str:
    """A full-text query matching any of the words, in the dialect's syntax."""
    if _is_sqlite(session):
        return " OR ".join(f'"{word}"' for word in words)
    return " | ".join(words)


async def touch_store(session: AsyncSession, store_id: str) -> None:
    await session.execute(update(VectorStore).where(VectorStore.id == store_id).values(last_active_at=now()))


async def live_embeddings(session: AsyncSession, store_id: str) -> list[tuple[int, int, bytes]]:
    """(chunk id, its file's row, little-endian float32 vector) of every chunk of the store's completed files, by
    chunk id."""
    result = await session.execute(
        text(f"SELECT c.id, c.file_seq, c.embedding {_LIVE_CHUNKS} ORDER BY c.id"), {"store": store_id}
    )
    return [(int(row[0]), int(row[1]), bytes(row[2])) for row in result]


async def live_file_attributes(session: AsyncSession, store_id: str) -> list[tuple[int, dict[str, Any]]]:
    """(row, attributes) of each completed file of the store: what a search's filters are checked against."""
    result = await session.execute(
        text(
            "SELECT f.seq, f.attributes_json FROM vector_store_files f WHERE f.vector_store_id = :store "
            "AND f.status = 'completed' AND f.deleted_at IS NULL"
        ),
        {"store": store_id},
    )
    return [(int(row[0]), json.loads(row[1])) for row in result]


async def keyword_ranked(
    session: AsyncSession, store_id: str, words: list[str], depth: int, file_seqs: list[int] | None = None
) -> list[int]:
    """Ids of the live chunks holding any of the words, best first, at most `depth`; only those of the files
    `file_seqs` when given."""
    among = f" AND c.file_seq IN ({_id_list(file_seqs)})" if file_seqs is not None else ""
    if _is_sqlite(session):
        statement = text(
            "SELECT c.id FROM vector_store_chunks_fts "
            "JOIN vector_store_chunks c ON c.id = vector_store_chunks_fts.rowid "
            "JOIN vector_store_files f ON f.seq = c.file_seq "
            "WHERE vector_store_chunks_fts MATCH :match AND c.vector_store_id = :store "
            f"AND f.status = 'completed' AND f.deleted_at IS NULL{among} "
            "ORDER BY bm25(vector_store_chunks_fts) LIMIT :depth"
        )
    else:
        statement = text(
            f"SELECT c.id {_LIVE_CHUNKS}{among} AND c.text_search @@ to_tsquery('english', :match) "
            "ORDER BY ts_rank_cd(c.text_search, to_tsquery('english', :match)) DESC LIMIT :depth"
        )
    params = {"match": _any_of(session, words), "store": store_id, "depth": depth}
    return [int(row[0]) for row in await session.execute(statement, params)]


async def count_chunks_with(session: AsyncSession, store_id: str, words: list[str], cap: int) -> dict[str, int]:
    """How many of the store's chunks hold each word, counting no further than `cap`, in one round trip; so a
    very common word costs a bounded scan."""
    if _is_sqlite(session):
        # CROSS JOIN keeps SQLite walking the word's postings; left to itself it walks the store's chunks.
        inner = (
            "SELECT 1 FROM vector_store_chunks_fts "
            "CROSS JOIN vector_store_chunks c ON c.id = vector_store_chunks_fts.rowid "
            "WHERE vector_store_chunks_fts MATCH :match{i} AND c.vector_store_id = :store LIMIT :cap"
        )
    else:
        inner = (
            "SELECT 1 FROM vector_store_chunks c WHERE c.vector_store_id = :store "
            "AND c.text_search @@ to_tsquery('english', :match{i}) LIMIT :cap"
        )
    statement = " UNION ALL ".join(
        f"SELECT {i} AS word, count(*) AS chunks FROM ({inner.format(i=i)}) AS capped{i}" for i in range(len(words))
    )
    params: dict[str, Any] = {"store": store_id, "cap": cap}
    params.update({f"match{i}": _any_of(session, [word]) for i, word in enumerate(words)})
    rows = (await session.execute(text(statement), params)).all()
    return {words[int(index)]: int(count) for index, count in rows}


def _id_list(chunk_ids: list[int]) -> str:
    return ", ".join(str(int(chunk_id)) for chunk_id in chunk_ids)


async def chunk_details(session: AsyncSession, chunk_ids: list[int]) -> dict[int, tuple[str, str, str, dict[str, Any]]]:
    """(file id, filename, text, attributes) of each chunk still there, but for files past their `expires_at` (gone
    for their project; the expiry job takes them out of their stores)."""
    if not chunk_ids:
        return {}
    result = await session.execute(
        text(
            "SELECT c.id, c.file_id, c.text, f.attributes_json, s.filename FROM vector_store_chunks c "
            "JOIN vector_store_files f ON f.seq = c.file_seq JOIN files s ON s.id = c.file_id "
            f"WHERE c.id IN ({_id_list(chunk_ids)}) AND (s.expires_at IS NULL OR s.expires_at > :now)"
        ),
        {"now": now()},
    )
    return {int(row[0]): (row[1], row[4], row[2], json.loads(row[3])) for row in result}
