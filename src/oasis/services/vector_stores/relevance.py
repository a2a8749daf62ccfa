"""Search scores that mean the same thing for every query, store and embedding model, so that a
`score_threshold` can tell relevant chunks from unrelated ones.

Raw cosine similarity cannot: an embedding model like e5 puts any two English texts at 0.7 to 0.8, and where that
floor lies differs by query and by model. So each query's similarity to a chunk is measured against the same
query's similarity to a fixed set of unrelated background passages embedded with the store's model: a chunk as
close as the background is unrelated; one several background deviations above it is on topic. That z-score
goes through a logistic curve to [0, 1]; query words found in the chunk (keyword evidence) raise it further.
"""

from __future__ import annotations

import math
import re

import numpy as np

# Everyday passages on no topic in particular: what "unrelated" looks like to an embedding model.
BACKGROUND_PASSAGES = (
    "The meeting was moved to Thursday afternoon because the conference room was booked.",
    "Add two cups of flour and a pinch of salt, then stir until the dough is smooth.",
    "The river flooded the lower fields after three days of heavy rain.",
    "Our quarterly revenue grew by eight percent, driven mostly by new subscriptions.",
    "The patient was advised to rest, drink fluids and return if the fever persisted.",
    "Install the package with the command line tool and restart the service afterwards.",
    "The museum's new wing displays sculptures from the eighteenth century.",
    "Players take turns rolling the dice and moving their pieces around the board.",
    "The contract ends on the last day of the month unless either party renews it.",
    "Birds migrate south in autumn to find food and warmer weather.",
    "The train to the airport leaves every fifteen minutes from platform four.",
    "She painted the kitchen walls a pale shade of green last summer.",
    "The function returns an empty list when no records match the filter.",
    "Customers can return unused items within thirty days for a full refund.",
    "The orchestra rehearsed the symphony twice before the opening night.",
    "Mountain roads are often closed in winter because of snow and ice.",
    "The committee approved the budget after a long debate about staffing.",
    "Children learn to read faster when adults read aloud to them every day.",
    "The engine overheated, so the driver pulled over and called for help.",
    "A light breeze carried the smell of the sea into the small harbour town.",
    "The software update fixes a bug that caused the app to crash on start-up.",
    "Wear comfortable shoes, since the tour covers about five kilometres on foot.",
    "The election results will be announced after all the ballots are counted.",
    "Regular exercise and enough sleep improve concentration and mood.",
    "The library extended its opening hours during the exam period.",
    "The recipe works just as well with almonds instead of walnuts.",
    "Shares fell sharply after the company warned that profits would be lower.",
    "The hotel offers free breakfast and a shuttle bus to the city centre.",
    "Water boils at a lower temperature at high altitude.",
    "The novel follows three generations of a family living by the coast.",
    "Please send the signed form back by email before Friday.",
    "The team scored twice in the final ten minutes to win the match.",
)

# The z-score at which a chunk counts as even odds relevant, and how steeply the score rises around it. With
# multilingual-e5-small, the right document for a question sits 2.9 to 5.5 deviations above the background and the
# closest wrong one at most 2.0 (the questions in tests/api/test_vector_stores.py).
MIDPOINT_Z = 2.5
STEEPNESS = 1.5
# How far query words found in a chunk move its score towards 1 when all of them are there.
KEYWORD_WEIGHT = 0.5
# Words compare by their first letters, a crude stemmer that works across languages ("volcanoes", "volcano").
STEM_LENGTH = 5

_WORDS = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    (  # noqa: SIM905 (a sentence of words reads better than 60 quoted ones)
        "a an and are as at be by can could did do does for from had has have how i if in into is it its me my "
        "no not of on or our should so than that the their them then there these they this to was we were what "
        "when where which who whom why will with would you your"
    ).split()
)


def stems(text: str) -> set[str]:
    return {word[:STEM_LENGTH] for word in _WORDS.findall(text.lower())}


def query_stems(query: str) -> set[str]:
    """The query's content words (stopwords left out), stemmed."""
    return {word[:STEM_LENGTH] for word in _WORDS.findall(query.lower()) if word not in _STOPWORDS}


def keyword_coverage(wanted: set[str], chunk_stems: set[str]) -> float:
    """The share of the query's content words that the chunk holds."""
    return len(wanted & chunk_stems) / len(wanted) if wanted else 0.0


def background_spread(background: np.ndarray, query: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the query's similarity to the background passages."""
    similarities = background @ query
    return float(similarities.mean()), max(float(similarities.std()), 1e-3)


def relevance(similarity: float, spread: tuple[float, float], coverage: float) -> float:
    """A score in (0, 1): semantic closeness against the background, raised by keyword evidence."""
    mean, deviation = spread
    z = (similarity - mean) / deviation
    # Clamped: a chunk scored by keywords alone (similarity -1) over a narrow background would overflow exp.
    semantic = 1.0 / (1.0 + math.exp(min(700.0, -STEEPNESS * (z - MIDPOINT_Z))))
    return 1.0 - (1.0 - semantic) * (1.0 - KEYWORD_WEIGHT * coverage)
