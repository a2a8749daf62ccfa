"""A vector-store file's content is answered a page at a time (services/vector_stores/service.py content_page):
a large file's text is never held whole, and `next_page` continues where a page stopped."""

from __future__ import annotations

from collections.abc import Iterator

from oasis.services.vector_stores.service import MAX_CONTENT_PAGE_CHARS, content_page


def _pieces(count: int, size: int, read: list[int]) -> Iterator[str]:
    for index in range(count):
        read.append(index)
        yield str(index % 10) * size


def test_pages_hold_at_most_a_pages_worth_and_continue_where_they_stopped() -> None:
    size = MAX_CONTENT_PAGE_CHARS // 3
    read: list[int] = []
    first, following = content_page(_pieces(7, size, read), 0)
    assert [piece[0] for piece in first] == ["0", "1", "2"] and following == 3
    assert read == [0, 1, 2, 3]  # the piece after the page is read, to know one follows, and nothing past it
    second, following = content_page(_pieces(7, size, []), 3)
    assert [piece[0] for piece in second] == ["3", "4", "5"] and following == 6
    last, following = content_page(_pieces(7, size, []), 6)
    assert [piece[0] for piece in last] == ["6"] and following is None


def test_a_piece_larger_than_a_page_is_a_page_of_its_own() -> None:
    pages, following = content_page(iter(["x" * (MAX_CONTENT_PAGE_CHARS + 1), "y"]), 0)
    assert len(pages) == 1 and following == 1
