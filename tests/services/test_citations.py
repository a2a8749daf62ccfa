"""Citations made from what an answer drew on, and the queries a file_search call searches for."""

from __future__ import annotations

from oasis.services.assistants.citations import Citer, Source
from oasis.services.assistants.file_search import queries_of

VOLCANO = Source(0, 0, "file-volcano", "Mount Etna in Sicily is one of the most active volcanoes in Europe.")
COFFEE = Source(0, 1, "file-coffee", "Espresso forces hot water through ground beans at nine bars of pressure.")


def _cite(pieces: list[str]) -> tuple[str, list[tuple[str, str]]]:
    citer = Citer([VOLCANO, COFFEE])
    segments = [segment for piece in pieces for segment in citer.feed(piece)] + citer.end()
    text = "".join(segment.text for segment in segments)
    return text, [(segment.source.file_id, segment.quote) for segment in segments if segment.source is not None]


def test_each_sentence_that_draws_on_a_passage_is_marked_after_it_ends() -> None:
    text, cited = _cite(["Etna", " in Sic", "ily is an active", " volcano.", " Espresso", " uses nine bars", "."])
    assert text == ("Etna in Sicily is an active volcano.【0:0†source】 Espresso uses nine bars.【0:1†source】")
    assert [file_id for file_id, _ in cited] == ["file-volcano", "file-coffee"]
    assert cited[0][1] == VOLCANO.text


def test_sentences_that_draw_on_nothing_are_left_alone() -> None:
    text, cited = _cite(["I do not know.", " The weather is nice today.\n", "Maybe ask again."])
    assert text == "I do not know. The weather is nice today.\nMaybe ask again." and cited == []


def test_numbers_and_abbreviations_inside_a_sentence_do_not_end_it() -> None:
    text, cited = _cite(["Espresso uses 9.5 bars of pressure through ground beans"])
    assert text.endswith("beans【0:1†source】") and len(cited) == 1


def test_a_call_searches_the_models_query_and_the_users_question() -> None:
    assert queries_of('{"query": "queen bee eggs"}', "How many eggs?") == ["queen bee eggs", "How many eggs?"]
    assert queries_of('{"queries": ["a", "b"]}', "q") == ["a", "b", "q"]
    assert queries_of("not json", "How many eggs?") == ["How many eggs?"]
    assert queries_of('{"query": "  "}', "") == []
