"""The world the default image model knows: scenes of coloured shapes, their captions in varied English, a
renderer that draws them (the training data) and a detector that reads them back off pixels (the check that a
generated image shows what its prompt asked for).

One place for all three so the training script, the tests and the benchmark agree on what "a red circle on the
left" means.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 70, 225),
    "yellow": (245, 215, 20),
    "purple": (135, 45, 175),
    "orange": (250, 135, 20),
    "pink": (250, 120, 190),
    "brown": (125, 75, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "grey": (140, 140, 140),
    "light blue": (175, 215, 245),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "centre")
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}

# Where an object's centre is drawn for each position (fractions of the canvas: x0, y0, x1, y1), and the looser
# region the detector accepts its colour's centroid in.
_DRAW_REGION = {
    None: (0.14, 0.14, 0.86, 0.86),
    "left": (0.12, 0.14, 0.36, 0.86),
    "right": (0.64, 0.14, 0.88, 0.86),
    "top": (0.14, 0.12, 0.86, 0.36),
    "bottom": (0.14, 0.64, 0.86, 0.88),
    "centre": (0.38, 0.38, 0.62, 0.62),
}
_DETECT_REGION = {
    None: (0.0, 0.0, 1.0, 1.0),
    "left": (0.0, 0.0, 0.45, 1.0),
    "right": (0.55, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.45),
    "bottom": (0.0, 0.55, 1.0, 1.0),
    "centre": (0.28, 0.28, 0.72, 0.72),
}
_RADIUS = {"small": (0.08, 0.10), None: (0.12, 0.15), "large": (0.19, 0.23)}
# Two positioned groups share the canvas only on opposite sides.
_OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


@dataclass(frozen=True)
class Group:
    """`count` shapes of one colour, shape and size, all in one position (None: anywhere)."""

    colour: str
    shape: str
    count: int = 1
    size: str | None = None
    position: str | None = None


@dataclass(frozen=True)
class Scene:
    groups: tuple[Group, ...]
    background: str = "white"


def held_out(group: Group) -> bool:
    """The colour/shape/position triples training never shows, in any scene, so a test can ask for them. A fixed
    ~15% by hash, the same on every machine."""
    key = f"{group.colour}|{group.shape}|{group.position}"
    return sum(ord(c) * (i + 1) for i, c in enumerate(key)) % 7 == 0


def all_triples() -> list[Group]:
    return [Group(c, s, 1, None, p) for c in COLOURS for s in SHAPES for p in (None, *POSITIONS)]


def random_scene(rng: random.Random) -> Scene:
    """A scene from the training distribution (held-out triples excluded)."""
    while True:
        scene = _draw_scene(rng)
        if not any(held_out(g) for g in scene.groups) and layout(scene, random.Random(0)) is not None:
            return scene


def _draw_scene(rng: random.Random) -> Scene:
    background = "white" if rng.random() < 0.55 else rng.choice(list(BACKGROUNDS))
    colours = [c for c in COLOURS if not (background == "white" and c == "yellow" and rng.random() < 0.5)]
    if rng.random() < 0.6:
        count = rng.choice((1, 1, 2, 3))
        size = rng.choice((None, None, "small", "large")) if count == 1 else rng.choice((None, "small"))
        position = rng.choice((None, None, *POSITIONS))
        if position == "centre" and count > 1:
            position = None
        return Scene((Group(rng.choice(colours), rng.choice(SHAPES), count, size, position),), background)
    first, second = rng.sample(colours, 2)
    if rng.random() < 0.7:
        position = rng.choice(list(_OPPOSITE))
        positions: tuple[str | None, str | None] = (position, _OPPOSITE[position])
    else:
        positions = (None, None)
    groups = tuple(
        Group(colour, rng.choice(SHAPES), 1, rng.choice((None, "small")), pos)
        for colour, pos in zip((first, second), positions, strict=True)
    )
    return Scene(groups, background)


# --- captions -----------------------------------------------------------------------------------------------------

_POSITION_PHRASES = {
    "left": ("on the left", "on the left side", "to the left", "at the left"),
    "right": ("on the right", "on the right side", "to the right", "at the right"),
    "top": ("at the top", "near the top", "in the upper part", "at the top of the picture"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part", "at the bottom of the picture"),
    "centre": ("in the centre", "in the center", "in the middle"),
}
_PREFIXES = ("", "", "a picture of ", "an image of ", "a drawing of ", "there is ", "draw ", "show ")
_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars"}


def _group_phrase(group: Group, rng: random.Random) -> str:
    words = [] if group.size is None else [group.size]
    words.append(group.colour)
    words.append(group.shape if group.count == 1 else _PLURAL[group.shape])
    article = COUNT_WORDS[group.count]
    if group.count == 1:
        article = rng.choice(("a", "a", "one")) if words[0][0] not in "aeiou" else rng.choice(("an", "an", "one"))
    phrase = f"{article} {' '.join(words)}"
    if group.position is not None:
        phrase += " " + rng.choice(_POSITION_PHRASES[group.position])
    return phrase


def caption(scene: Scene, rng: random.Random) -> str:
    """One of the many English sentences that describe `scene`."""
    phrases = [_group_phrase(g, rng) for g in scene.groups]
    body = phrases[0] if len(phrases) == 1 else rng.choice((" and ", ", ", " and also ")).join(phrases)
    if scene.background != "white" or rng.random() < 0.3:
        body += rng.choice((" on a {} background", " against a {} background", " with a {} background")).format(
            scene.background
        )
    text = rng.choice(_PREFIXES) + body
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def vocabulary() -> list[str]:
    """Every word a caption can hold; the model's text encoder knows these and reads any other as unknown."""
    words: set[str] = set()
    for phrases in _POSITION_PHRASES.values():
        for phrase in phrases:
            words.update(tokenize_words(phrase))
    for prefix in _PREFIXES:
        words.update(tokenize_words(prefix))
    words.update(tokenize_words(" ".join(COLOURS) + " " + " ".join(BACKGROUNDS) + " " + " ".join(SIZES)))
    words.update(SHAPES)
    words.update(_PLURAL.values())
    words.update(("a", "an", "one", "two", "three", "and", "also", "on", "against", "with", "background"))
    return sorted(words)


def tokenize_words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


# --- rendering ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    colour: str
    shape: str
    x: float
    y: float
    radius: float
    rotation: float


def layout(scene: Scene, rng: random.Random) -> list[Placed] | None:
    """Centres and sizes for every object, none overlapping; None when the scene cannot be fitted."""
    placed: list[Placed] = []
    for group in scene.groups:
        x0, y0, x1, y1 = _DRAW_REGION[group.position]
        for _ in range(group.count):
            for _attempt in range(60):
                radius = rng.uniform(*_RADIUS[group.size])
                x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
                if not (radius <= x <= 1 - radius and radius <= y <= 1 - radius):
                    continue
                if all(math.hypot(x - p.x, y - p.y) > radius + p.radius + 0.03 for p in placed):
                    placed.append(Placed(group.colour, group.shape, x, y, radius, rng.uniform(-0.3, 0.3)))
                    break
            else:
                return None
    return placed


def _outline(obj: Placed, scale: float) -> list[tuple[float, float]] | None:
    cx, cy, r = obj.x * scale, obj.y * scale, obj.radius * scale
    if obj.shape == "square":
        side = r * 0.85
        corners = [(-side, -side), (side, -side), (side, side), (-side, side)]
    elif obj.shape == "triangle":
        corners = [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
        corners = [(x, y + r * 0.15) for x, y in corners]
    elif obj.shape == "star":
        corners = [
            ((r if k % 2 == 0 else r * 0.45) * math.cos(a), (r if k % 2 == 0 else r * 0.45) * math.sin(a))
            for k, a in enumerate(-math.pi / 2 + k * math.pi / 5 for k in range(10))
        ]
    else:
        return None
    cos, sin = math.cos(obj.rotation), math.sin(obj.rotation)
    if obj.shape == "triangle" or obj.shape == "star":
        cos, sin = 1.0, 0.0  # upright: a tilted triangle reads as another shape at 32 pixels
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in corners]


def render(scene: Scene, size: int, rng: random.Random, supersample: int = 4) -> np.ndarray:
    """The scene as an HxWx3 uint8 array, drawn large and shrunk so edges are smooth."""
    from PIL import Image, ImageDraw

    objects = layout(scene, rng)
    if objects is None:
        raise ValueError("scene does not fit")
    big = size * supersample
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in objects:
        outline = _outline(obj, big)
        colour = COLOURS[obj.colour]
        if outline is None:
            cx, cy, r = obj.x * big, obj.y * big, obj.radius * big
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.polygon(outline, fill=colour)
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


# --- detection ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    ok: bool  # colour, count and place all right
    reason: str
    placed: bool = False  # the colour is there and centred in the named region, whatever the count


def colour_mask(image: np.ndarray, colour: str, tolerance: float = 70.0) -> np.ndarray:
    """Pixels nearer to `colour` than to any other named colour or background, and within `tolerance`."""
    pixels = image.astype(np.float32)
    palette = {**{f"bg:{k}": v for k, v in BACKGROUNDS.items()}, **COLOURS}
    names = list(palette)
    centres = np.asarray([palette[n] for n in names], dtype=np.float32)
    distances = np.linalg.norm(pixels[:, :, None, :] - centres[None, None], axis=-1)
    nearest = distances.argmin(axis=-1)
    index = names.index(colour)
    return (nearest == index) & (distances[:, :, index] < tolerance)


def _components(mask: np.ndarray, min_pixels: int) -> list[np.ndarray]:
    """Connected regions (4-neighbour) of `mask` at least `min_pixels` big, each as an array of (y, x)."""
    seen = np.zeros_like(mask, dtype=bool)
    height, width = mask.shape
    found: list[np.ndarray] = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        stack, members = [(int(y0), int(x0))], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            members.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(members) >= min_pixels:
            found.append(np.asarray(members))
    return found


def check(image: np.ndarray, group: Group) -> Finding:
    """Does `image` show `group`: its colour present, as `count` separate blobs, their centroid in the named
    region? (The shape itself is not judged: at 32 pixels a detector for it would be a model of its own.)"""
    height, width = image.shape[:2]
    mask = colour_mask(image, group.colour)
    min_pixels = max(3, int(0.004 * height * width))
    blobs = _components(mask, min_pixels)
    if not blobs:
        return Finding(False, f"no {group.colour} object")
    ys, xs = np.concatenate(blobs).T
    cx, cy = (xs.mean() + 0.5) / width, (ys.mean() + 0.5) / height
    x0, y0, x1, y1 = _DETECT_REGION[group.position]
    if not (x0 <= cx <= x1 and y0 <= cy <= y1):
        return Finding(False, f"{group.colour} centroid at ({cx:.2f}, {cy:.2f}), not {group.position}")
    if len(blobs) != group.count:
        return Finding(False, f"{len(blobs)} {group.colour} objects, asked for {group.count}", placed=True)
    return Finding(True, "ok", placed=True)


def held_out_prompts() -> list[tuple[str, Group]]:
    """The evaluation set: one caption per held-out triple, plus counts of two and three where the position leaves
    room, each in a fixed wording the training captions could have used."""
    prompts: list[tuple[str, Group]] = []
    for triple in all_triples():
        if not held_out(triple):
            continue
        counts = (1,) if triple.position == "centre" else (1, 2)
        for count in counts:
            group = Group(triple.colour, triple.shape, count, None, triple.position)
            prompts.append((_plain_caption(group), group))
    return prompts


def _plain_caption(group: Group) -> str:
    noun = group.shape if group.count == 1 else _PLURAL[group.shape]
    article = ("an" if group.colour[0] in "aeiou" else "a") if group.count == 1 else COUNT_WORDS[group.count]
    text = f"{article} {group.colour} {noun}"
    if group.position is not None:
        text += " " + _POSITION_PHRASES[group.position][0]
    return text
