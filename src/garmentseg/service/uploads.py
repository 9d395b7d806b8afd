"""How an upload reaches a handler: BentoML parses the form once, the form rules are checked on what it
parsed, and the image part stays in memory as bytes.

BentoML 1.4 needs three adjustments, applied by `parse_forms_once` when the service starts:
- its multipart parser (`MultipartSerde.parse_request`) answers a malformed body with a 500 (Starlette's
  400 is caught as an unexpected error) and downloads the URL given as text in a file field (which this
  service does not offer: uploads only). The wrapper checks the parsed form before BentoML reads it and
  records each refusal for the guard (bentoml/BentoML#5436 is the open upstream work on download errors).
- BentoML logs every exception raised while it parses a request as an ERROR with its traceback; a
  refusal is the client's mistake, answered with a 4xx and counted in garmentseg_rejected_requests, so
  those records are dropped.
- Starlette spools every uploaded file past 1 MB to disk: a studio PNG (~5 MB) would be written and read
  back through a thread hop. Uploads are capped at max_request_bytes by the guard, so they stay in memory
  up to that size (Kludex/starlette#3190 makes the size a `request.form()` argument; not released).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import Field, PlainValidator, ValidationError, WithJsonSchema

from garmentseg.imageio import ImageError, check_size, decode, read_header, too_small
from garmentseg.service.errors import KIND_STATUS, RequestError, refuse

if TYPE_CHECKING:
    from starlette.datastructures import FormData
    from starlette.requests import Request

# Parts a form may have: the endpoints take at most two fields.
MAX_PARTS = 8


class UploadBytes(bytes):
    """An upload's bytes that remember the client's filename (/cutout?queue=true names the shot by it)."""

    filename: str | None = None


def _upload_bytes(value: Any) -> bytes:
    """The uploaded part's bytes (the parser has kept it in memory and checked that it is a file)."""
    from starlette.datastructures import UploadFile

    if isinstance(value, UploadFile):
        data = UploadBytes(value.file.read())
        data.filename = value.filename
        return data
    if isinstance(value, bytes):
        return value
    raise ValueError("the field must be a file upload")


# Annotated on Path so BentoML documents and parses the field as a multipart file; the value is its bytes.
Upload = Annotated[
    Path,
    PlainValidator(_upload_bytes),
    WithJsonSchema({"type": "string", "format": "binary"}),
    Field(description="The studio shot (PNG or JPEG), multipart field `image`."),
]


def read_upload(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Uploaded bytes -> RGB uint8, refusing empty, oversized, non-image, bomb, corrupt and thumbnail-sized
    files (4xx)."""
    if len(data) > max_bytes:
        raise RequestError(413, "too_large", f"upload is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        check_size(read_header(data), max_pixels)
        image = decode(data, max_pixels=max_pixels)
    except ImageError as exc:
        raise RequestError(KIND_STATUS.get(exc.kind, 400), exc.kind, f"image: {exc}") from None
    if problem := too_small(image):
        raise RequestError(400, "too_small", problem)
    return image


def check_form(form: FormData, *, allowed: dict[str, bool], files: list[str]) -> None:
    """Only `allowed` fields (name -> required), and each of `files` one file upload, not text."""
    from starlette.datastructures import UploadFile

    names = [name for name, _ in form.multi_items()]
    if not names:
        raise RequestError(400, "bad_multipart", "multipart/form-data body has no parts")
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise RequestError(
            400, "unexpected_field", f"unexpected form field(s) {unknown}; allowed: {list(allowed)}"
        )
    for name in files:
        values = form.getlist(name)
        if not values and allowed[name]:
            raise RequestError(
                400, "missing_field", f"form field {name!r} with the image is missing (got {names})"
            )
        if len(values) > 1:
            raise RequestError(400, "duplicate_field", f"send one image in {name!r}, got {len(values)}")
        if values and not isinstance(values[0], UploadFile):
            raise RequestError(
                400, "not_a_file", f"form field {name!r} must be a file upload (with a filename)"
            )


def _malformed(detail: str) -> RequestError:
    """Starlette's refusal of a form, in words: a text part over its 1 MB limit can only be an image sent
    without a filename."""
    if "Part exceeded maximum size" in detail:
        return RequestError(
            400,
            "not_a_file",
            "a form field over 1 MB is not a file upload: send the image as a file, with a filename "
            "(curl -F image=@shot.png)",
        )
    return RequestError(400, "bad_multipart", f"malformed multipart body: {detail}")


def _invalid_fields(exc: ValidationError) -> RequestError:
    """Pydantic's errors on the form's fields as one 400 naming each field and the rule it breaks."""
    problems = "; ".join(
        f"form field {'.'.join(str(part) for part in error['loc'])!r}: {error['msg']}"
        for error in exc.errors()
    )
    return RequestError(400, "invalid_field", problems)


def _not_a_refusal(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], RequestError))


def parse_forms_once(max_request_bytes: int) -> None:
    """Make BentoML's multipart parsing refuse bad forms with a 4xx and keep uploads in memory (see above)."""
    from _bentoml_impl.serde import MultipartSerde
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartParser

    logging.getLogger("bentoml._internal.server.http_app").addFilter(_not_a_refusal)
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, max_request_bytes)
    parse = getattr(MultipartSerde.parse_request, "__wrapped__", MultipartSerde.parse_request)

    async def parse_request(self: MultipartSerde, request: Request, cls: Any) -> Any:
        try:
            form = await request.form(max_files=MAX_PARTS, max_fields=MAX_PARTS)
        except HTTPException as exc:
            raise refuse(request.scope, _malformed(str(exc.detail))) from None
        fields = {name: info.is_required() for name, info in cls.model_fields.items()}
        try:
            check_form(form, allowed=fields, files=list(cls.multipart_fields))
        except RequestError as err:
            raise refuse(request.scope, err) from None
        try:
            return await parse(self, request, cls)  # reads the form parsed above: Starlette keeps it
        except ValidationError as exc:  # a field's value (e.g. probability=banana), in the service's words
            raise refuse(request.scope, _invalid_fields(exc)) from None

    parse_request.__wrapped__ = parse  # type: ignore[attr-defined]
    MultipartSerde.parse_request = parse_request  # type: ignore[method-assign]
