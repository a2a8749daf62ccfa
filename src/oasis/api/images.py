"""Images: generations (JSON), edits and variations (multipart), and the signed links their `url` answers open."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import FormData, UploadFile

from oasis.api.deps import ContainerDep, PrincipalDep
from oasis.api.disconnect import unless_disconnected
from oasis.api.sse import typed_events_response
from oasis.errors import invalid_request
from oasis.protocol.extensions import CreateImageRequest
from oasis.services.images.pictures import MAX_GPT_IMAGE_UPLOAD_BYTES, MAX_UPLOAD_BYTES
from oasis.services.images.service import MAX_EDIT_IMAGES, EditRequest, ImageUpload, VariationRequest

router = APIRouter(tags=["Images"])
_MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@router.post("/images/generations", response_model=None)
async def create_image(
    body: CreateImageRequest, request: Request, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any] | StreamingResponse:
    # only what the client sent: an upstream gets no defaults it might refuse (the service has its own)
    payload = body.model_dump(mode="json", exclude_none=True, exclude_unset=True)
    if body.stream:
        events = await unless_disconnected(request, container.images.generate_events(payload))
        return await typed_events_response(events)
    work = container.images.generate(payload, principal.project_id, str(request.base_url))
    return await unless_disconnected(request, work)


def _text(form: FormData, name: str, default: str | None = None) -> str | None:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_request(f"'{name}' must be a text field.", param=name)
    return value if value not in (None, "") else default


def _number(form: FormData, name: str, default: int) -> int:
    text = _text(form, name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise invalid_request(f"'{name}' must be an integer.", param=name) from None


async def _upload(form: FormData, name: str, required: bool) -> ImageUpload | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise invalid_request(f"Missing required parameter: '{name}' (send it as a file part).", param=name)
        return None
    return await _read(value, name, MAX_UPLOAD_BYTES)


async def _read(value: Any, name: str, max_bytes: int) -> ImageUpload:
    if not isinstance(value, UploadFile):
        raise invalid_request(f"'{name}' must be a file part.", param=name)
    data = await value.read(max_bytes + 1)  # one byte over tells the service the file is too large
    return ImageUpload(data=data, filename=value.filename or "")


def _multipart(request: Request) -> None:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid_request("Send the image as multipart/form-data.", param="image")


# An edit's text fields, and how each is read: the GPT image models' own (OpenAI added them after the 2.0.0 spec)
# among them. Only the fields sent are passed on, as a generation's JSON body is.
_EDIT_FIELDS: dict[str, type] = {
    "prompt": str,
    "model": str,
    "n": int,
    "size": str,
    "response_format": str,
    "quality": str,
    "background": str,
    "output_format": str,
    "output_compression": int,
    "input_fidelity": str,
    "stream": bool,
    "partial_images": int,
    "user": str,
}


def _typed(form: FormData, name: str, kind: type) -> Any:
    text = _text(form, name)
    if text is None or kind is str:
        return text
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise invalid_request(f"'{name}' must be true or false.", param=name)
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        raise invalid_request(f"'{name}' must be an integer.", param=name) from None


@router.post("/images/edits", response_model=None)
async def create_image_edit(
    request: Request, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any] | StreamingResponse:
    _multipart(request)
    # more parts than an edit takes are let through to be refused with the part named (starlette's own refusal
    # names none); past this many, starlette refuses the form
    async with request.form(max_files=4 * MAX_EDIT_IMAGES, max_fields=32) as form:
        # one image as `image`; several (the GPT image models take up to 16) as `image[]`, as the SDKs send them
        parts = [*form.getlist("image"), *form.getlist("image[]")]
        parts = [part for part in parts if part != ""]
        if not parts:
            raise invalid_request("Missing required parameter: 'image' (send it as a file part).", param="image")
        if len(parts) > MAX_EDIT_IMAGES:
            raise invalid_request(f"Send at most {MAX_EDIT_IMAGES} images to edit.", param="image")
        images = [await _read(part, "image", MAX_GPT_IMAGE_UPLOAD_BYTES) for part in parts]
        body = {name: value for name, kind in _EDIT_FIELDS.items() if (value := _typed(form, name, kind)) is not None}
        if "prompt" not in body:
            raise invalid_request("Missing required parameter: 'prompt'.", param="prompt")
        edit = EditRequest(body=body, images=images, mask=await _upload(form, "mask", required=False))
    if body.get("stream"):
        events = await unless_disconnected(request, container.images.edit_events(edit))
        return await typed_events_response(events)
    work = container.images.edit(edit, principal.project_id, str(request.base_url))
    return await unless_disconnected(request, work)


@router.post("/images/variations")
async def create_image_variation(request: Request, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    _multipart(request)
    async with request.form(max_files=1, max_fields=32) as form:
        image = await _upload(form, "image", required=True)
        assert image is not None
        variation = VariationRequest(
            image=image,
            model=_text(form, "model", "dall-e-2") or "dall-e-2",
            n=_number(form, "n", 1),
            size=_text(form, "size", "1024x1024") or "1024x1024",
            response_format=_text(form, "response_format", "url") or "url",
        )
    work = container.images.vary(variation, principal.project_id, str(request.base_url))
    return await unless_disconnected(request, work)


@router.get("/images/files/{project}/{name}", include_in_schema=False)
async def image_file(
    project: str, name: str, container: ContainerDep, expires: int = Query(0), signature: str = Query("")
) -> StreamingResponse:
    """A generated image, by its signed link: no API key, as a browser opens OpenAI's image URLs."""
    chunks, seconds_left = await container.images.links.open(f"{project}/{name}", expires, signature)
    media_type = _MEDIA_TYPES.get(name.rpartition(".")[2], "image/png")
    return StreamingResponse(
        chunks, media_type=media_type, headers={"cache-control": f"private, max-age={seconds_left}"}
    )
