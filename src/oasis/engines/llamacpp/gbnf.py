"""Writing GBNF, llama.cpp's grammar language: literals, text that holds none of some words, members in order."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

# JSON's integers and numbers of at most 16 digits (as llama.cpp's converter writes them), the numbers' exponents of
# two digits at most: a number a reader takes is finite
INTEGER = '"-"? ( "0" | [1-9] [0-9]{0,15} )'
FINITE_NUMBER = f'{INTEGER} ( "." [0-9]{{1,16}} )? ( [eE] [-+]? [0-9]{{1,2}} )?'


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


def in_order(members: Sequence[tuple[str, bool]], name: str, separator: str, rules: MutableMapping[str, str]) -> str:
    """The rule of `members` (each an expression, and whether it is required) in their order, each optional one
    perhaps left out, `separator` between those written; the rules it needs, named after `name`, go to `rules`.
    From each member on there are two: what may follow when none was written before it (`first`), and when one
    was (`rest`, each member after a separator), so that optional members cost no more than their count. "" when
    there are no members."""
    first, rest = "", ""
    for index in range(len(members) - 1, -1, -1):
        member, needed = members[index]
        after = f" {rest}" if rest else ""
        if index:  # (the first member has no separator before it)
            rest_rule = f"{name}-rest-{index}"
            rules[rest_rule] = f"{separator} {member}{after}" if needed else f"( {separator} {member} )?{after}"
        else:
            rest_rule = ""
        first_rule = f"{name}-first-{index}"
        rules[first_rule] = f"{member}{after}" if needed else f"( {member}{after} )" + (f" | {first}" if first else "?")
        rest, first = rest_rule, first_rule
    return first
