"""Multipart form bodies read into bytes, whatever each part declares.

Starlette turns a part without a file name into text (and caps it at 1 MiB), but Immich sends its
image as a blob that may carry no file name; reading every part as bytes with python-multipart's
streaming parser keeps the image exact. The body size is bounded by BodyLimitMiddleware.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_PARTS = 16


@dataclass
class Part:
    """One form part: its bytes, and the file name and content type it declared (if any)."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(422, f"form field {self.name!r} is not valid UTF-8 text") from None


async def read_form(request: Request) -> dict[str, Part]:
    """Parse a multipart/form-data (or urlencoded) body into parts by name; 400/415 when malformed."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type == b"application/x-www-form-urlencoded":
        form = await request.form()
        return {name: Part(name, str(value).encode()) for name, value in form.items() if isinstance(value, str)}
    if content_type != b"multipart/form-data":
        raise HTTPException(415, "send the request as multipart/form-data")
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "malformed multipart body: the Content-Type has no boundary")
    collector = _Collector()
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    if not collector.complete:
        raise HTTPException(400, "malformed multipart body: it ends before its closing boundary")
    return collector.parts


def multipart_body(properties: dict[str, dict], required: tuple[str, ...] = ()) -> dict:
    """OpenAPI `openapi_extra` describing a multipart/form-data body read with `read_form` (FastAPI
    cannot see fields a handler parses itself)."""
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


class _Collector:
    """python-multipart callbacks that gather parts (names, headers, data)."""

    def __init__(self) -> None:
        self.parts: dict[str, Part] = {}
        self.complete = False
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._data = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._field, self._value, self._data = {}, b"", b"", bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]

    def _part_end(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise MultipartParseError("a part has no Content-Disposition: form-data; name=...")
        name = options[b"name"].decode("utf-8", "replace")
        if name in self.parts:
            raise MultipartParseError(f"form field {name!r} is given twice")
        if len(self.parts) >= MAX_PARTS:
            raise MultipartParseError(f"more than {MAX_PARTS} parts")
        filename = options.get(b"filename")
        content_type = self._headers.get(b"content-type")
        self.parts[name] = Part(
            name,
            bytes(self._data),
            filename.decode("utf-8", "replace") if filename is not None else None,
            content_type.decode("latin-1") if content_type is not None else None,
        )

    def _end(self) -> None:
        self.complete = True
