"""Writing GBNF, llama.cpp's grammar language: literals, and text that holds none of some words."""

from __future__ import annotations

from collections.abc import Sequence


def literal(text: str) -> str:
    """`text` as a GBNF string (its line breaks escaped, so that each rule stays on one line)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def text_without(words: Sequence[str]) -> str:
    """GBNF of any text that holds none of `words`, each of which opens with `<` and holds no other: text without
    `<`, then each `<` followed by the beginning of a word at most, and after a character that leaves every word,
    more text without `<` (llama.cpp's make_gbnf_excluding, which lets a word through after a second `<`)."""
    assert all(word.startswith("<") and "<" not in word[1:] for word in words)

    def after(rests: list[str]) -> str:
        firsts = sorted({rest[0] for rest in rests})
        alternatives = ["[^<" + "".join(class_char(char) for char in firsts) + "] [^<]*"]
        for char in firsts:
            longer = [rest[1:] for rest in rests if rest[0] == char]
            if all(longer):  # `char` completes no word: the word may go on
                alternatives.append(f"{literal(char)} {after(longer)}")
        return "( " + " | ".join(alternatives) + " )?"

    return f'[^<]* ( "<" {after([word[1:] for word in words])} )*'


def class_char(char: str) -> str:
    """A character in a GBNF class (llama.cpp reads `\\\\`, `\\]` and `\\x..` escapes there, no others)."""
    if char in "\\]":
        return "\\" + char
    return f"\\x{ord(char):02X}" if char in "^-" else char
