"""Text out of the file types OpenAI's file_search reads: plain text, markup, JSON, source code, PDF, DOCX, PPTX.

`text_pieces` reads a file object and yields its text in pieces, so that a large text, markup or PDF file is
never held whole, nor its text (DOCX and PPTX are parsed whole by their libraries, within a size bound).
"""

from __future__ import annotations

import codecs
import io
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path, PurePath
from typing import BinaryIO

from oasis.services.vector_stores.json_text import JSONTextError, json_text

TEXT_SUFFIXES = {
    ".txt", ".md", ".markdown", ".rst", ".csv", ".tex", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".css", ".go",
    ".java", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".php", ".py", ".rb", ".sh", ".rs", ".kt", ".swift", ".sql",
    ".yaml", ".yml", ".toml", ".xml",
}  # fmt: skip
MARKUP_SUFFIXES = {".html", ".htm"}
SPOOL_IN_MEMORY = 8 << 20  # files up to this size are read from memory, larger ones from a temporary file


def spooled(spool_dir: Path | None) -> BinaryIO:
    """A temporary file for a file's bytes, in memory while small. Past that it lives in `spool_dir` (the data
    dir, rather than the system's temp folder, which may be small or held in memory); it has no name, so a crash
    leaves nothing behind."""
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True)
    folder = None if spool_dir is None else str(spool_dir)
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=folder)  # type: ignore[return-value]


class UnsupportedFile(ValueError):
    """A file type that cannot be searched (OpenAI's `unsupported_file`)."""


class InvalidFile(ValueError):
    """A supported type whose content cannot be read, or holds no text (OpenAI's `invalid_file`)."""


READ_SIZE = 1 << 20
# DOCX and PPTX are zip files that python-docx and python-pptx unpack whole, parsing every XML part into a tree
# several times its size; past these bounds a file (a zip bomb, say) is refused rather than exhaust memory. A
# thousand-page document's XML is about 30 MB.
MAX_UNPACKED_BYTES = 1 << 30
MAX_UNPACKED_XML_BYTES = 200 << 20


def check_supported(filename: str) -> None:
    """UnsupportedFile for a type that cannot be searched, before anything is read."""
    suffix = PurePath(filename).suffix.lower()
    if suffix == ".doc":
        raise UnsupportedFile("Legacy Word .doc files cannot be read here; save the document as .docx.")
    if suffix not in TEXT_SUFFIXES | MARKUP_SUFFIXES | {".json", ".pdf", ".docx", ".pptx"}:
        raise UnsupportedFile(f"Files of type {suffix or '(no extension)'!r} are not supported for search.")


def text_pieces(filename: str, file: BinaryIO) -> Iterator[str]:
    """The file's text in pieces (about a megabyte each for text and markup, a page for PDF)."""
    check_supported(filename)
    suffix = PurePath(filename).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        yield from _decoded(file)
    elif suffix in MARKUP_SUFFIXES:
        yield from _html_pieces(_decoded(file))
    elif suffix == ".json":
        try:
            yield from json_text(_decoded(file))
        except JSONTextError as exc:
            raise InvalidFile(f"The file is not valid JSON: {exc}.") from None
    elif suffix == ".pdf":
        yield from _pdf_pages(file)
    elif suffix == ".docx":
        yield _docx_text(file)
    else:
        yield _pptx_text(file)


def extract_text(filename: str, data: bytes) -> str:
    """The whole text of a file held in memory (small files, tests)."""
    text = "".join(text_pieces(filename, io.BytesIO(data)))
    if not text.strip():
        raise InvalidFile("The file contains no text to index.")
    return text


def _decoded(file: BinaryIO) -> Iterator[str]:
    head = file.read(READ_SIZE)
    encoding = "utf-16" if head.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
    decoder = codecs.getincrementaldecoder(encoding)()
    block = head
    try:
        while block:
            yield decoder.decode(block)
            block = file.read(READ_SIZE)
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InvalidFile("The file is not valid UTF-8 text.") from None


class _TextOnly(HTMLParser):
    _SKIPPED = {"script", "style", "head", "noscript"}
    _BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIPPED:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html_pieces(markup: Iterator[str]) -> Iterator[str]:
    """Visible text, one line per block, blank lines dropped, runs of spaces made one; fed as it is read."""
    parser = _TextOnly()
    pending = ""
    first = True

    def lines(text: str) -> Iterator[str]:
        nonlocal first
        for line in text.splitlines():
            if line := " ".join(line.split()):
                yield line if first else "\n" + line
                first = False

    for piece in markup:
        parser.feed(piece)
        pending += "".join(parser.parts)
        parser.parts.clear()
        complete, newline, pending = pending.rpartition("\n")
        if newline:
            yield "".join(lines(complete))
        elif len(pending) > READ_SIZE:
            # A megabyte of text without a line break is broken at its last space, so memory stays bounded.
            cut = pending.rfind(" ") if " " in pending else len(pending)
            yield "".join(lines(pending[:cut]))
            pending = pending[cut:]
    parser.close()
    yield "".join(lines(pending + "".join(parser.parts)))


def _pdf_pages(file: BinaryIO) -> Iterator[str]:
    from pypdf import PdfReader

    with _unreadable_as_invalid("PDF"):
        reader = PdfReader(file)  # reads objects from the file as pages ask for them
        for number, page in enumerate(reader.pages):
            yield ("\n\n" if number else "") + (page.extract_text() or "")


def _check_unpacked_size(file: BinaryIO, kind: str) -> None:
    """InvalidFile when the zip file's parts unpack to more than the bounds above (zipfile stops reading a part at
    the size its header gives, so the header's sizes can be trusted)."""
    import zipfile

    try:
        with _unreadable_as_invalid(kind), zipfile.ZipFile(file) as archive:  # NotImplementedError for some
            parts = archive.infolist()
    finally:
        file.seek(0)
    unpacked = sum(part.file_size for part in parts)
    xml = sum(part.file_size for part in parts if part.filename.lower().endswith((".xml", ".rels")))
    if unpacked > MAX_UNPACKED_BYTES or xml > MAX_UNPACKED_XML_BYTES:
        raise InvalidFile(
            f"The {kind} file unpacks to {unpacked:,} bytes, {xml:,} of them XML; at most {MAX_UNPACKED_BYTES:,}"
            f" and {MAX_UNPACKED_XML_BYTES:,} can be read."
        )


def _docx_text(file: BinaryIO) -> str:
    import docx

    _check_unpacked_size(file, "DOCX")
    with _unreadable_as_invalid("DOCX"):
        document = docx.Document(file)
        paragraphs = [paragraph.text for paragraph in document.paragraphs]
        for table in document.tables:
            for row in table.rows:
                paragraphs.append(" | ".join(cell.text for cell in row.cells))
    return "\n".join(paragraphs)


def _pptx_text(file: BinaryIO) -> str:
    import pptx

    _check_unpacked_size(file, "PPTX")
    with _unreadable_as_invalid("PPTX"):
        presentation = pptx.Presentation(file)
        slides = []
        for slide in presentation.slides:
            texts = [shape.text_frame.text for shape in slide.shapes if shape.has_text_frame]
            slides.append("\n".join(texts))
    return "\n\n".join(slides)


@contextmanager
def _unreadable_as_invalid(kind: str) -> Iterator[None]:
    """Whatever pypdf, python-docx or python-pptx raises while reading a file is that file's fault (a broken XML
    part raises lxml's XMLSyntaxError, a missing relationship KeyError or AttributeError): trying again would not
    help, so it fails as invalid_file rather than as the server's error."""
    try:
        yield
    except MemoryError:
        raise
    except Exception as exc:
        raise InvalidFile(f"The {kind} file cannot be read: {exc}") from None
