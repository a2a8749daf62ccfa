"""Text out of the file types OpenAI's file_search reads: plain text, markup, JSON, source code, PDF, DOCX, PPTX."""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser
from pathlib import PurePath

TEXT_SUFFIXES = {
    ".txt", ".md", ".markdown", ".rst", ".csv", ".tex", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".css", ".go",
    ".java", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".php", ".py", ".rb", ".sh", ".rs", ".kt", ".swift", ".sql",
    ".yaml", ".yml", ".toml", ".xml",
}  # fmt: skip
MARKUP_SUFFIXES = {".html", ".htm"}


class UnsupportedFile(ValueError):
    """A file type that cannot be searched (OpenAI's `unsupported_file`)."""


class InvalidFile(ValueError):
    """A supported type whose content cannot be read, or holds no text (OpenAI's `invalid_file`)."""


def extract_text(filename: str, data: bytes) -> str:
    suffix = PurePath(filename).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        text = _decode(data)
    elif suffix in MARKUP_SUFFIXES:
        text = _html_text(_decode(data))
    elif suffix == ".json":
        text = _json_text(_decode(data))
    elif suffix == ".pdf":
        text = _pdf_text(data)
    elif suffix == ".docx":
        text = _docx_text(data)
    elif suffix == ".pptx":
        text = _pptx_text(data)
    elif suffix == ".doc":
        raise UnsupportedFile("Legacy Word .doc files cannot be read here; save the document as .docx.")
    else:
        raise UnsupportedFile(f"Files of type {suffix or '(no extension)'!r} are not supported for search.")
    if not text.strip():
        raise InvalidFile("The file contains no text to index.")
    return text


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
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


def _html_text(markup: str) -> str:
    parser = _TextOnly()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _json_text(raw: str) -> str:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidFile(f"The file is not valid JSON: {exc.msg} (line {exc.lineno}).") from None
    return json.dumps(value, indent=1, ensure_ascii=False)


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise InvalidFile(f"The PDF cannot be read: {exc}") from None


def _docx_text(data: bytes) -> str:
    import zipfile

    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise InvalidFile(f"The DOCX file cannot be read: {exc}") from None
    paragraphs = [paragraph.text for paragraph in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            paragraphs.append(" | ".join(cell.text for cell in row.cells))
    return "\n".join(paragraphs)


def _pptx_text(data: bytes) -> str:
    import zipfile

    import pptx

    try:
        presentation = pptx.Presentation(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise InvalidFile(f"The PPTX file cannot be read: {exc}") from None
    slides = []
    for slide in presentation.slides:
        texts = [shape.text_frame.text for shape in slide.shapes if shape.has_text_frame]
        slides.append("\n".join(texts))
    return "\n\n".join(slides)
