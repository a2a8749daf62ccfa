"""Images: generations, edits and variations, on a local image engine or forwarded to an upstream server.

The rules follow the name the client asked for, as OpenAI's do: `dall-e-2` (the default) takes the three square
sizes, n up to 10 and prompts up to 1000 characters; `dall-e-3` takes 1024x1024, 1792x1024 and 1024x1792, n=1,
prompts up to 4000, and its answers carry `revised_prompt` (oasis draws the prompt as given, so that is the
prompt itself); the GPT image models take their own sizes, qualities and output fields. A model asked for by its
own id takes all of them. Edits under `dall-e-2` take one square PNG and the square sizes; under a GPT image name
(or a model's own id) PNG, JPEG or WebP images of any shape, their sizes and fields, and without a mask the whole
image is redrawn to the prompt. Variations take the square sizes. Neither is offered under `dall-e-3`, as at OpenAI.

Whatever an engine draws for an edit, the pixels outside the mask are the source image's own: the service puts
them back before encoding.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import math
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from oasis.engines.forwarding import ForwardingEngine
from oasis.engines.image import EditJob, GenerationJob, ImageEngine, Look, Previews, VariationJob
from oasis.engines.registry import EngineRegistry
from oasis.errors import OasisError, invalid_request
from oasis.protocol.extensions import CreateImageRequest
from oasis.services.images.links import ImageLinks
from oasis.services.images.pictures import (
    GPT_IMAGE_FORMATS,
    MAX_GPT_IMAGE_UPLOAD_BYTES,
    Output,
    Picture,
    check_picture,
    encoded_image,
    picture_format,
    png_bytes,
    read_picture,
    read_png,
    require_square,
    resized,
)
from oasis.services.models.engine_lookup import implements, loaded_engine

SQUARES = ("256x256", "512x512", "1024x1024")
DALL_E_3_SIZES = ("1024x1024", "1792x1024", "1024x1792")
GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536")
ALL_SIZES = ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536")
RESPONSE_FORMATS = ("url", "b64_json")
DALL_E_QUALITIES = ("standard", "hd")
GPT_IMAGE_QUALITIES = ("low", "medium", "high", "auto")
# The GPT image models' own fields (OpenAI added them after the 2.0.0 spec); the DALL-E models take none of them.
GPT_IMAGE_FIELDS = (
    "output_format",
    "output_compression",
    "background",
    "moderation",
    "stream",
    "partial_images",
    "input_fidelity",
)
INPUT_FIDELITIES = ("low", "high")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
MAX_EDIT_IMAGES = 16  # the GPT image models' most


@dataclass(frozen=True)
class Rules:
    sizes: tuple[str, ...]
    max_n: int
    max_prompt: int
    revises_prompt: bool = False
    qualities: tuple[str, ...] = DALL_E_QUALITIES
    gpt_image_fields: bool = False  # output_format, background, streaming…
    # GPT image models: base64 only, `auto` sizes and qualities, and the settings used named in the answer
    gpt_image: bool = False


DALL_E_2 = Rules(SQUARES, 10, 1000)
DALL_E_3 = Rules(DALL_E_3_SIZES, 1, 4000, revises_prompt=True)
GPT_IMAGE = Rules(GPT_IMAGE_SIZES, 10, 32000, qualities=GPT_IMAGE_QUALITIES, gpt_image_fields=True, gpt_image=True)
OWN_NAME = Rules(ALL_SIZES, 10, 4000, qualities=DALL_E_QUALITIES + GPT_IMAGE_QUALITIES, gpt_image_fields=True)


def rules_for(model: str) -> Rules:
    if model.startswith(("gpt-image-", "chatgpt-image-")):
        return GPT_IMAGE
    return {"dall-e-2": DALL_E_2, "dall-e-3": DALL_E_3}.get(model, OWN_NAME)


@dataclass(frozen=True)
class Generation:
    """A generation request, checked: what to draw and how to answer."""

    model: str
    prompt: str
    n: int
    size: str
    width: int
    height: int
    quality: str  # as the answer names it (a GPT image model's `auto` resolved)
    look: Look
    response_format: str
    output: Output
    revised_prompt: str | None
    gpt_image: bool


@dataclass(frozen=True)
class Drawn:
    files: list[bytes]  # PNG, JPEG or WebP
    revised: list[str | None]
    settings: dict[str, Any]  # what a GPT image model's answer names: background, output_format, quality, size, usage


class PartialImages:
    """A streamed drawing's partial images (`count` of them asked for): put by the engine's thread, read on the
    event loop as they come while the drawing runs (`drawn`)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.open = True  # until nobody reads them (the client gone, or the drawing ended)
        self.result: Any = None  # what the drawing gave, once `drawn` has read it to its end
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Drawn | None] = asyncio.Queue()

    def put(self, partial: Drawn) -> None:
        """Called from the engine's thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, partial)
        except RuntimeError:  # the event loop closed (the server stopping): nobody reads it
            self.open = False

    async def drawn(self, drawing: Awaitable[Any]) -> AsyncGenerator[tuple[int, Drawn], None]:
        """Runs `drawing`, yielding each partial image put meanwhile with its index; then `result` is its result
        (its error raised). A reader that stops early lets go of the wait (the engine's thread ends its drawing)."""
        task = asyncio.ensure_future(drawing)
        # the engine's thread queues its last partial before the drawing ends, so before this end mark
        task.add_done_callback(lambda _: self._queue.put_nowait(None))
        try:
            index = 0
            while (partial := await self._queue.get()) is not None:
                yield index, partial
                index += 1
            self.result = task.result()
        finally:
            self.open = False
            task.cancel()
            if task.done() and not task.cancelled():
                task.exception()  # read: an error after the reader left is not logged as never retrieved


# The partial images a drawing sends, where it sends them: asked for only when there is somewhere to send them.
Partials = PartialImages | None


# What a GPT image model's answer names besides the images.
ANSWER_SETTINGS = ("background", "output_format", "quality", "size", "usage")
# A GPT image model's `usage` counts OpenAI's image tokens; a local model spends none. Sent all the same (as zeros),
# since the SDK's stream event requires the field.
NO_USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}
# Values of the GPT image models' own fields that ask for nothing a DALL-E model does not do anyway.
_HARMLESS = {
    "stream": (False,),
    "background": ("auto", "opaque"),
    "moderation": ("auto",),
    "partial_images": (0,),
    "output_format": ("png",),
    "input_fidelity": ("low",),
}
# What only the GPT image models take: a request that names no model but uses one is for gpt-image-1.
GPT_IMAGE_SIZES_ONLY = (*(size for size in GPT_IMAGE_SIZES if size not in SQUARES), "auto")
GPT_IMAGE_QUALITIES_ONLY = tuple(quality for quality in GPT_IMAGE_QUALITIES if quality != "auto")


def _gpt_image_field(body: dict[str, Any]) -> str | None:
    """The first of the GPT image models' own fields that the request gives a value asking for something."""
    for field in GPT_IMAGE_FIELDS:
        value = body.get(field)
        if value is not None and value not in _HARMLESS.get(field, ()):
            return field
    return None


def model_asked(body: dict[str, Any]) -> str:
    """The model named, or OpenAI's default: `dall-e-2`, unless a parameter only the GPT image models take is used."""
    model = body.get("model")
    if model:
        return str(model)
    if (
        _gpt_image_field(body) is not None
        or body.get("size") in GPT_IMAGE_SIZES_ONLY
        or body.get("quality") in GPT_IMAGE_QUALITIES_ONLY
    ):
        return "gpt-image-1"
    return "dall-e-2"


@dataclass(frozen=True)
class ImageUpload:
    data: bytes
    filename: str


@dataclass(frozen=True)
class EditRequest:
    body: dict[str, Any]  # the text fields the client sent (prompt, model, n, size, …), typed; no defaults
    images: list[ImageUpload]  # the first is the one edited (and the one a mask is for)
    mask: ImageUpload | None


@dataclass(frozen=True)
class VariationRequest:
    image: ImageUpload
    model: str
    n: int
    size: str
    response_format: str


def _check_common(rules: Rules, model: str, n: int, size: str, response_format: str) -> tuple[int, int]:
    if not 1 <= n <= 10:
        raise invalid_request(f"{n} is not between 1 and 10 - 'n'", param="n")
    if n > rules.max_n:
        raise invalid_request(f"The model '{model}' makes one image a request: give n=1.", param="n")
    if size not in rules.sizes:
        raise invalid_request(f"'{size}' is not one of {list(rules.sizes)} - 'size'", param="size")
    if response_format not in RESPONSE_FORMATS:
        raise invalid_request(
            f"'{response_format}' is not one of {list(RESPONSE_FORMATS)} - 'response_format'", param="response_format"
        )
    width, height = (int(side) for side in size.split("x"))
    return width, height


def _check_prompt(rules: Rules, model: str, prompt: str) -> None:
    if not prompt.strip():
        raise invalid_request("'prompt' must not be empty.", param="prompt")
    if len(prompt) > rules.max_prompt:
        raise invalid_request(
            f"'prompt' is {len(prompt)} characters; '{model}' takes at most {rules.max_prompt}.", param="prompt"
        )


def _edit_rules(model: str) -> Rules:
    _not_dall_e_3(model)
    return rules_for(model)


def _variation_rules(model: str) -> Rules:
    """Variations take the square sizes under every name (OpenAI makes them with DALL-E 2 only)."""
    _not_dall_e_3(model)
    return Rules(SQUARES, 10, 1000 if model == "dall-e-2" else 4000)


def _not_dall_e_3(model: str) -> None:
    if model == "dall-e-3":
        raise invalid_request("Edits and variations are made with 'dall-e-2' (or a model's own id).", param="model")


@dataclass(frozen=True)
class _ReadEdit:
    """An edit request, checked and its images decoded: what drawing it takes."""

    engine: Any
    local: bool  # drawn here (else forwarded upstream)
    generation: Generation
    image: np.ndarray  # the source at the size drawn
    repaint: np.ndarray | None  # where to redraw (None: the whole image)
    formats: list[str]  # each image's file format


def _one_image_edit(body: dict[str, Any], image: bytes, mask: bytes | None) -> EditRequest:
    return EditRequest(body, [ImageUpload(image, "image")], None if mask is None else ImageUpload(mask, "mask"))


def _edit_model(request: EditRequest) -> str:
    """As generations choose: the model named, else `dall-e-2` unless the request uses what only the GPT image
    models take, several images among it."""
    if not request.body.get("model") and len(request.images) > 1:
        return "gpt-image-1"
    return model_asked(request.body)


class ImageService:
    def __init__(self, registry: EngineRegistry, links: ImageLinks) -> None:
        self._registry = registry
        self.links = links
        self._locks: dict[int, threading.Lock] = {}

    def _engine(self, model: str) -> Any:
        engine = loaded_engine(self._registry, model)
        if implements(engine, ImageEngine) or implements(engine, ForwardingEngine):
            return engine
        raise invalid_request(f"The model '{model}' does not make images.", param="model")

    async def _run(self, engine: Any, method: str, job: Any) -> list[np.ndarray]:
        """One job at a time per engine (pipelines are not thread-safe, and two would only share the cores). The
        lock is held in the worker thread: a client that leaves cancels the wait, not the drawing, and the next job
        must still wait for the drawing to end."""
        lock = self._locks.setdefault(id(engine), threading.Lock())

        def draw() -> list[np.ndarray]:
            with lock:
                images: list[np.ndarray] = getattr(engine, method)(job)
                return images

        return await asyncio.to_thread(draw)

    def _checked(
        self, body: dict[str, Any], model: str, rules: Rules | None = None, auto_size: str = "1024x1024"
    ) -> Generation:
        """The request's values by the rules of the model name asked for (a generation's unless `rules` are given);
        a 400 naming the first bad one. `auto_size` is what `size: auto` draws."""
        rules = rules or rules_for(model)
        prompt = body["prompt"]
        _check_prompt(rules, model, prompt)
        if not rules.gpt_image_fields and (given := _gpt_image_field(body)) is not None:
            raise invalid_request(f"'{given}' is not supported with '{model}'.", param=given)
        n = 1 if body.get("n") is None else int(body["n"])
        size = body.get("size") or ("auto" if rules.gpt_image else "1024x1024")
        drawn_size = auto_size if size == "auto" and rules.gpt_image_fields else size
        quality = body.get("quality") or "auto"
        if quality == "auto" and not rules.gpt_image:
            quality = "standard"  # OpenAI's `auto` for every model; the DALL-E models' own default
        if quality not in rules.qualities:
            raise invalid_request(f"'{quality}' is not one of {list(rules.qualities)} - 'quality'", param="quality")
        stream = bool(body.get("stream"))
        response_format = body.get("response_format") or ("b64_json" if rules.gpt_image or stream else "url")
        if (rules.gpt_image or stream) and response_format != "b64_json":
            answered = f"'{model}' always answers" if rules.gpt_image else "A stream answers"
            raise invalid_request(
                f"{answered} with base64 images: 'response_format' must be 'b64_json'.", param="response_format"
            )
        width, height = _check_common(rules, model, n, drawn_size, response_format)
        _check_output_fields(body)
        output = Output(
            body.get("output_format") or "png",
            100 if body.get("output_compression") is None else int(body["output_compression"]),
        )
        look = Look(quality="hd" if quality in ("hd", "high") else "standard", style=body.get("style") or "vivid")
        return Generation(
            model=model,
            prompt=prompt,
            n=n,
            size=drawn_size,
            width=width,
            height=height,
            quality="medium" if quality == "auto" else quality,  # auto draws the engines' usual number of steps
            look=look,
            response_format=response_format,
            output=output,
            revised_prompt=prompt if rules.revises_prompt else None,
            gpt_image=rules.gpt_image,
        )

    async def generate(
        self, body: dict[str, Any], project_id: str, base_url: str, partials: Partials = None
    ) -> dict[str, Any]:
        """`body` as the client sent it (no defaults filled in); the answer as OpenAI's."""
        generation = self._checked(body, model_asked(body))
        drawn = await self._draw(generation, body, partials)
        answer = await self._reply(drawn.files, generation.response_format, project_id, base_url, drawn.revised)
        if generation.gpt_image:
            answer.update(drawn.settings)
        return answer

    def check_generation(self, body: dict[str, Any]) -> dict[str, Any]:
        """What `generate` would refuse the body for, refused now: a 400 naming the bad value, a 404 for an unknown
        model (a response checks its image_generation tool before anything is generated); the body as the images
        API reads it (`"80"` read as 80)."""
        try:
            request = CreateImageRequest.model_validate(body)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise invalid_request(f"{error['msg']}.", param=where) from None
        body = request.model_dump(mode="json", exclude_none=True, exclude_unset=True)
        model = model_asked(body)
        self._checked(body, model)
        if implements(self._engine(model), ImageEngine):
            _check_opaque(body)
        return body

    async def check_edit(self, body: dict[str, Any], image: bytes, mask: bytes | None) -> None:
        """What an edit of `image` (with `mask`) with these settings would be refused for, refused now (a response's
        image_generation tool checks its edits before anything is generated): a 400 naming it."""
        await self._read_edit(_one_image_edit(body, image, mask))

    async def generate_base64(self, body: dict[str, Any], project_id: str, partials: Partials = None) -> dict[str, Any]:
        """`generate`, its images in base64 whatever the model's own default answer is (a link); `partials`: a
        local engine's images part way are sent there too."""
        if not rules_for(model_asked(body)).gpt_image:
            body = {**body, "response_format": "b64_json"}
        return await self.generate(body, project_id, base_url="", partials=partials)

    async def generate_events(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A streamed generation's events: `partial_images` times (0 to 3) an `image_generation.partial_image` an
        image, drawn part way (a local engine's; an upstream's image comes whole), then one
        `image_generation.completed` an image."""
        generation = self._checked(body, model_asked(body))
        return await _drawn_events("image_generation", body, lambda partials: self._draw(generation, body, partials))

    async def _draw(self, generation: Generation, body: dict[str, Any], partials: Partials = None) -> Drawn:
        engine = self._engine(generation.model)
        if implements(engine, ImageEngine):
            _check_opaque(body)
            job = GenerationJob(
                generation.prompt,
                generation.n,
                generation.width,
                generation.height,
                generation.look,
                previews=_previews(generation, partials),
            )
            return await _encoded(generation, await self._run(engine, "generate", job))
        reply = await engine.forward("/images/generations", _forwarded(generation, body))
        return _drawn_upstream(reply)

    async def edit(
        self, request: EditRequest, project_id: str, base_url: str, partials: Partials = None
    ) -> dict[str, Any]:
        generation, drawn = await self._edited(request, partials)
        answer = await self._reply(drawn.files, generation.response_format, project_id, base_url, drawn.revised)
        if generation.gpt_image:
            answer.update(drawn.settings)
        return answer

    async def edit_base64(
        self, body: dict[str, Any], image: bytes, mask: bytes | None, project_id: str, partials: Partials = None
    ) -> dict[str, Any]:
        """`edit` of one image (a response's image_generation call editing the conversation's newest image), its
        images in base64 whatever the model's own default answer is; `partials` as `generate_base64`'s."""
        if not rules_for(model_asked(body)).gpt_image:
            body = {**body, "response_format": "b64_json"}
        return await self.edit(_one_image_edit(body, image, mask), project_id, base_url="", partials=partials)

    async def edit_events(self, request: EditRequest) -> AsyncIterator[dict[str, Any]]:
        """A streamed edit's events: `image_edit.partial_image`s (as a generation's, what is outside the mask kept
        in them too), then one `image_edit.completed` an image."""

        async def drawing(partials: Partials) -> Drawn:
            return (await self._edited(request, partials))[1]

        return await _drawn_events("image_edit", request.body, drawing)

    async def _edited(self, request: EditRequest, partials: Partials = None) -> tuple[Generation, Drawn]:
        read = await self._read_edit(request)
        engine, generation, image, repaint, body = read.engine, read.generation, read.image, read.repaint, request.body
        if not read.local:
            fields = {key: _form_value(value) for key, value in _forwarded(generation, body).items()}
            reply = await engine.forward_files("/images/edits", fields, _edit_files(request, read.formats))
            return generation, _drawn_upstream(reply)
        if repaint is None:  # no mask: the whole image redrawn to the prompt, its composition kept
            previews = _previews(generation, partials)
            fidelity = body.get("input_fidelity") or "low"
            job: Any = VariationJob(image, generation.n, generation.prompt, generation.look, fidelity, previews)
            return generation, await _encoded(generation, await self._run(engine, "vary", job))

        def kept(drawn: list[np.ndarray]) -> list[np.ndarray]:
            return [np.where(repaint[:, :, None], picture, image).astype(np.uint8) for picture in drawn]

        job = EditJob(
            image=image,
            repaint=repaint,
            prompt=generation.prompt,
            n=generation.n,
            look=generation.look,
            previews=_previews(generation, partials, kept),
        )
        drawn = await self._run(engine, "edit", job)
        return generation, await _encoded(generation, await asyncio.to_thread(kept, drawn))

    async def _read_edit(self, request: EditRequest) -> _ReadEdit:
        """An edit request checked by its model's rules (a 400 naming what is refused) and its images decoded."""
        model = _edit_model(request)
        rules = _edit_rules(model)
        body = request.body
        if len(request.images) > 1 and not rules.gpt_image_fields:
            raise invalid_request(f"'{model}' edits one image: send one 'image'.", param="image")
        fidelity = body.get("input_fidelity") or "low"
        if fidelity not in INPUT_FIDELITIES:
            raise invalid_request(
                f"'{fidelity}' is not one of {list(INPUT_FIDELITIES)} - 'input_fidelity'", param="input_fidelity"
            )
        if not 0 <= body.get("partial_images", 0) <= 3:
            raise invalid_request(
                f"{body['partial_images']} is not between 0 and 3 - 'partial_images'", param="partial_images"
            )
        engine = self._engine(model)
        local = implements(engine, ImageEngine)
        if local and len(request.images) > 1:
            raise invalid_request(
                "This server's image models edit one image: send one 'image' (a model routed upstream takes several).",
                param="image",
            )
        # decoding an image of up to 50 MB (the others are only checked): off the event loop
        source, formats = await asyncio.to_thread(_edit_pictures, request, rules)
        generation = self._checked(body, model, rules, auto_size=_nearest_size(source))
        image, repaint = await asyncio.to_thread(_edit_pixels, source, request.mask, rules, generation)
        if local:
            _check_opaque(body)
        return _ReadEdit(engine, local, generation, image, repaint, formats)

    async def vary(self, request: VariationRequest, project_id: str, base_url: str) -> dict[str, Any]:
        rules = _variation_rules(request.model)
        width, height = _check_common(rules, request.model, request.n, request.size, request.response_format)
        image = await asyncio.to_thread(_variation_pixels, request, width, height)
        engine = self._engine(request.model)
        if not implements(engine, ImageEngine):
            files = [("image", _file_part(request.image, "image", "png"))]
            reply = await engine.forward_files("/images/variations", _fields(request), files)
            return await self._relay(reply, request.response_format, project_id, base_url)
        job = VariationJob(image=image, n=request.n)
        drawn = await self._run(engine, "vary", job)
        return await self._answer(drawn, request.response_format, project_id, base_url, None)

    async def _answer(
        self, images: list[np.ndarray], response_format: str, project_id: str, base_url: str, revised: str | None
    ) -> dict[str, Any]:
        encoded = await asyncio.to_thread(lambda: [png_bytes(image) for image in images])
        return await self._reply(encoded, response_format, project_id, base_url, [revised] * len(encoded))

    async def _relay(
        self, reply: dict[str, Any], response_format: str, project_id: str, base_url: str
    ) -> dict[str, Any]:
        """An upstream's answer (asked for as b64_json), kept here and linked when the client wants a url."""
        encoded, revised = _relayed(reply)
        return await self._reply(encoded, response_format, project_id, base_url, revised)

    async def _reply(
        self,
        encoded: list[bytes],
        response_format: str,
        project_id: str,
        base_url: str,
        revised: list[str | None],
    ) -> dict[str, Any]:
        data: list[dict[str, Any]] = []
        for picture, revised_prompt in zip(encoded, revised, strict=True):
            if response_format == "b64_json":
                item: dict[str, Any] = {"b64_json": base64.b64encode(picture).decode("ascii")}
            else:
                item = {"url": await self.links.keep(project_id, picture, base_url)}
            if revised_prompt is not None:
                item["revised_prompt"] = revised_prompt
            data.append(item)
        return {"created": int(time.time()), "data": data}


def _relayed(reply: dict[str, Any]) -> tuple[list[bytes], list[str | None]]:
    """An upstream's images (asked for as base64) and their revised prompts."""
    encoded: list[bytes] = []
    revised: list[str | None] = []
    for item in reply.get("data") or []:
        try:
            encoded.append(base64.b64decode(item["b64_json"], validate=True))
        except (KeyError, TypeError, binascii.Error):
            raise OasisError(
                502, "The upstream server sent an image that is not base64.", type="server_error"
            ) from None
        revised.append(item.get("revised_prompt"))
    return encoded, revised


async def _drawn_events(
    kind: str, body: dict[str, Any], drawing: Callable[[Partials], Awaitable[Drawn]]
) -> AsyncIterator[dict[str, Any]]:
    """A streamed drawing's events: `<kind>.partial_image` for each image of each preview the engine sends (as
    many as `partial_images` asks, numbered from 0 by `partial_image_index`), then `<kind>.completed` for each
    image drawn. The first is awaited here, so that the request's own wait (which notices a client leaving) covers
    the drawing until then, and a refusal before it keeps its HTTP status."""

    async def events() -> AsyncGenerator[dict[str, Any], None]:
        previews = PartialImages(int(body.get("partial_images") or 0))
        drawn = previews.drawn(drawing(previews if previews.count else None))
        async with contextlib.aclosing(drawn) as partials:  # a client gone stops the previews at once
            async for index, partial in partials:
                for event in _image_events(f"{kind}.partial_image", partial):
                    event.pop("usage", None)  # the completed image's alone
                    yield {**event, "partial_image_index": index}
        for event in _image_events(f"{kind}.completed", previews.result):
            yield event

    rest = events()
    try:
        first = await anext(rest)
    except BaseException:
        await rest.aclose()
        raise
    return _then(first, rest)


async def _then(first: dict[str, Any], rest: AsyncGenerator[dict[str, Any], None]) -> AsyncIterator[dict[str, Any]]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()


def _image_events(kind: str, drawn: Drawn) -> list[dict[str, Any]]:
    created_at = int(time.time())
    return [
        {
            "type": kind,
            "b64_json": base64.b64encode(picture).decode("ascii"),
            "created_at": created_at,
            **drawn.settings,
        }
        for picture in drawn.files
    ]


def _previews(
    generation: Generation,
    partials: Partials,
    kept: Callable[[list[np.ndarray]], list[np.ndarray]] = lambda drawn: drawn,
) -> Previews | None:
    """What asks an engine for `partials`: its images part way, `kept` (an edit's pixels outside the mask put
    back), encoded as the final ones are; none once nobody reads them (the engine's lock is held meanwhile)."""
    if partials is None:
        return None
    sent_to = partials

    def send(drawn: list[np.ndarray]) -> None:
        if sent_to.open:
            sent_to.put(_encode(generation, kept(drawn)))

    return Previews(partials.count, send)


def _check_output_fields(body: dict[str, Any]) -> None:
    """The GPT image models' output fields (a generation's JSON body checks them as it is read; an edit's form
    fields are checked here)."""
    for field, allowed in (("output_format", OUTPUT_FORMATS), ("background", BACKGROUNDS)):
        if body.get(field) is not None and body[field] not in allowed:
            raise invalid_request(f"'{body[field]}' is not one of {list(allowed)} - '{field}'", param=field)
    compression = body.get("output_compression")
    if compression is not None and not 0 <= compression <= 100:
        raise invalid_request(
            f"{compression} is not between 0 and 100 - 'output_compression'", param="output_compression"
        )


def _check_opaque(body: dict[str, Any]) -> None:
    if body.get("background") == "transparent":
        raise invalid_request(
            "This server's image models draw opaque images: 'background' must be 'opaque' or 'auto'.",
            param="background",
        )


async def _encoded(generation: Generation, images: list[np.ndarray]) -> Drawn:
    """What a local engine drew, written in the format asked for, with the settings a GPT image answer names."""
    return await asyncio.to_thread(_encode, generation, images)


def _encode(generation: Generation, images: list[np.ndarray]) -> Drawn:
    output = generation.output
    files = [encoded_image(image, output) for image in images]
    settings = {
        "background": "opaque",
        "output_format": output.format,
        "quality": generation.quality,
        "size": generation.size,
        "usage": NO_USAGE,
    }
    return Drawn(files, [generation.revised_prompt] * len(files), settings)


def _forwarded(generation: Generation, body: dict[str, Any]) -> dict[str, Any]:
    """What an upstream is asked: whole (streamed or not, the answer is streamed here), and as the client sent it
    otherwise: the GPT image models answer base64 only and refuse `response_format`; the DALL-E models' defaults
    are filled in and their images asked for as base64, kept here and linked when the client wants a url."""
    forwarded = {key: value for key, value in body.items() if key not in ("stream", "partial_images")}
    if generation.gpt_image:
        forwarded.pop("response_format", None)
    else:
        forwarded.update(n=generation.n, size=generation.size, response_format="b64_json")
    return forwarded


def _drawn_upstream(reply: dict[str, Any]) -> Drawn:
    files, revised = _relayed(reply)
    settings = {key: reply[key] for key in ANSWER_SETTINGS if key in reply}  # the upstream's own account
    return Drawn(files, revised, settings)


def _form_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _edit_pictures(request: EditRequest, rules: Rules) -> tuple[Picture, list[str]]:
    """The first image's pixels, and each image's format, checked by the rules: DALL-E 2 takes one square PNG under
    4 MB, the GPT image models PNG, JPEG or WebP files under 50 MB of any shape (the images after the first, which
    only an upstream reads, are checked without being decoded)."""
    if not rules.gpt_image_fields:
        source = read_png(request.images[0].data, "image")
        require_square(source, "image")
        return source, ["png"]
    first, *others = request.images
    source = read_picture(first.data, "image", GPT_IMAGE_FORMATS, MAX_GPT_IMAGE_UPLOAD_BYTES)
    formats = [picture_format(first.data)]
    for upload in others:
        check_picture(upload.data, "image", GPT_IMAGE_FORMATS, MAX_GPT_IMAGE_UPLOAD_BYTES)
        formats.append(picture_format(upload.data))
    return source, formats


def _nearest_size(picture: Picture) -> str:
    """`size: auto` for an edit: of the GPT image models' sizes, the one nearest the image's shape."""
    height, width = picture.rgb.shape[:2]
    return min(GPT_IMAGE_SIZES, key=lambda size: abs(math.log(width / height) - math.log(_aspect(size))))


def _aspect(size: str) -> float:
    width, height = (int(side) for side in size.split("x"))
    return width / height


def _edit_pixels(
    source: Picture, mask_upload: ImageUpload | None, rules: Rules, generation: Generation
) -> tuple[np.ndarray, np.ndarray | None]:
    """The source at the size to draw, and where to redraw (True) at that size: None for the whole image, which
    the GPT image models redraw when no mask is sent (a model's own id when the image has no transparency)."""
    width, height = generation.width, generation.height
    image = resized(source.rgb, width, height)
    transparent = source.alpha == 0 if source.alpha is not None else None
    if mask_upload is not None:
        repaint = _masked(source, read_png(mask_upload.data, "mask"))
    elif transparent is not None and transparent.any() and not rules.gpt_image:
        repaint = transparent
    elif rules.gpt_image_fields:
        return image, None
    else:
        raise invalid_request(
            "'image' has no transparent pixels: send a 'mask' PNG whose transparent pixels mark what to change, or "
            "an image whose transparent pixels do.",
            param="image",
        )
    return image, resized(repaint.astype(np.uint8) * 255, width, height, nearest=True) > 127


def _variation_pixels(request: VariationRequest, width: int, height: int) -> np.ndarray:
    source = read_png(request.image.data, "image")
    require_square(source, "image")
    return resized(source.rgb, width, height)


def _masked(source: Picture, mask: Picture) -> np.ndarray:
    """True where the edit redraws: the mask's fully transparent pixels."""
    if mask.rgb.shape != source.rgb.shape:
        height, width = source.rgb.shape[:2]
        raise invalid_request(
            f"'mask' is {mask.rgb.shape[1]}x{mask.rgb.shape[0]}; it must be the image's size, {width}x{height}.",
            param="mask",
        )
    if mask.alpha is None:
        raise invalid_request(
            "'mask' has no transparency: its fully transparent pixels mark what to change.", param="mask"
        )
    return mask.alpha == 0


def _fields(request: VariationRequest) -> dict[str, str]:
    return {"n": str(request.n), "size": request.size, "response_format": "b64_json"}


def _edit_files(request: EditRequest, formats: list[str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The images as multipart parts: one as `image`, several as `image[]` (as the SDKs send them), and the mask,
    each named and typed by the format it was found to be (a client's own type may be `octet-stream`)."""
    field = "image" if len(request.images) == 1 else "image[]"
    parts = [
        (field, _file_part(upload, f"image{index}", file_format))
        for index, (upload, file_format) in enumerate(zip(request.images, formats, strict=True))
    ]
    if request.mask is not None:
        parts.append(("mask", _file_part(request.mask, "mask", "png")))
    return parts


def _file_part(upload: ImageUpload, stem: str, file_format: str) -> tuple[str, bytes, str]:
    return (upload.filename or f"{stem}.{file_format}", upload.data, f"image/{file_format}")
