"""File content parts for a local text model: `{"type": "file", "file": {"file_id": ...}}` (an uploaded file) or
`{"file_data": <base64 or a data URL>, "filename": ...}` becomes the file's text, read as file_search reads it (text,
markup, JSON, code, PDF, DOCX, PPTX), in the message where the part was. OpenAI reads PDFs this way for its models
(their text, and pictures of their pages, which a text model cannot see). A model routed upstream receives the
parts as they were sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import mimetypes
import re

from oasis.errors import OasisError, invalid_request
from oasis.protocol.extensions import ChatCompletionRequest, FilePart
from oasis.services.chat.content_parts import has_parts, with_parts_as_text
from oasis.services.files.service import FileService
from oasis.services.vector_stores.text_extraction import InvalidFile, UnsupportedFile, text_pieces

# OpenAI takes up to 32 MB of files in one request.
MAX_FILE_BYTES = 32 << 20
# The files' text, read piece by piece, may not pass this: more than any context here holds (about 500,000
# tokens), and a bound on what a zipped document or a PDF whose pages repeat one stream can unpack to.
MAX_FILE_TEXT_CHARS = 2_000_000
_DATA_URL = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*;base64,(?P<data>.*)", re.DOTALL)


def has_file_parts(request: ChatCompletionRequest) -> bool:
    return has_parts(request, FilePart)


async def with_file_text(request: ChatCompletionRequest, project_id: str, files: FileService) -> ChatCompletionRequest:
    """The request with each file part replaced by a text part holding the file's text."""
    budget, room = MAX_FILE_BYTES, MAX_FILE_TEXT_CHARS

    async def text_of(part: FilePart, index: int, place: int) -> str:
        nonlocal budget, room
        param = f"messages[{index}].content[{place}].file"
        filename, data = await _file_bytes(part, project_id, files, param, budget)
        budget -= len(data)
        text = await asyncio.to_thread(_text, filename, data, param, room)
        room -= len(text)
        return f"{filename}:\n\n{text}"

    return await with_parts_as_text(request, FilePart, text_of)


async def _file_bytes(
    part: FilePart, project_id: str, files: FileService, param: str, budget: int
) -> tuple[str, bytes]:
    file_id, file_data, filename = (part.file.get(key) for key in ("file_id", "file_data", "filename"))
    if isinstance(file_id, str) and file_data is None:
        try:
            content = await files.content(project_id, file_id)
        except OasisError as exc:
            if exc.status == 404:
                raise invalid_request(
                    f"No file with id '{file_id}' in this project.", param=f"{param}.file_id"
                ) from None
            raise
        if content.size > budget:
            raise _too_large(param)
        data = b"".join([chunk async for chunk in content.chunks])
        return content.filename, data
    if isinstance(file_data, str) and file_id is None:
        found = _DATA_URL.fullmatch(file_data)
        encoded, media = (found["data"], found["media"]) if found else (file_data, None)
        if len(encoded) * 3 // 4 > budget:
            raise _too_large(param)
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_request(
                "'file_data' must be base64 (or a base64 data URL).", param=f"{param}.file_data"
            ) from None
        if not isinstance(filename, str) or not filename:
            suffix = mimetypes.guess_extension(media) if media else None
            if suffix is None:
                raise invalid_request(
                    "A file given as 'file_data' needs a 'filename' (or a data URL naming its type).",
                    param=f"{param}.filename",
                )
            filename = f"file{suffix}"
        return filename, data
    raise invalid_request("A file part takes one of 'file_id' or 'file_data'.", param=param)


def _too_large(param: str) -> OasisError:
    return invalid_request(f"The files of one request may hold up to {MAX_FILE_BYTES >> 20} MB.", param=param)


def _text(filename: str, data: bytes, param: str, room: int) -> str:
    pieces: list[str] = []
    try:
        for piece in text_pieces(filename, io.BytesIO(data)):
            room -= len(piece)
            if room < 0:
                raise invalid_request(
                    f"The text of the request's files is longer than {MAX_FILE_TEXT_CHARS:,} characters.", param=param
                )
            pieces.append(piece)
    except UnsupportedFile:
        raise invalid_request(
            f"{filename}: this type of file cannot be read as text here (text, markup, JSON, code, PDF, DOCX and PPTX "
            "can).",
            param=param,
            code="unsupported_file",
        ) from None
    except InvalidFile as exc:
        raise invalid_request(f"{filename}: {exc}", param=param, code="invalid_file") from None
    text = "".join(pieces)
    if not text.strip():
        raise invalid_request(f"{filename}: the file contains no text.", param=param, code="invalid_file")
    return text
