"""The two endpoints FileMediaStore's URLs point at (with S3, clients talk to
S3 instead): the target of upload forms, and expiring downloads. Errors are
RFC 9457 problem+json: 403 bad or expired token, 404 no such object, 413 too
large, 415 declared type differs from the token's, 422 malformed form."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from adapters.media import FileMediaStore, IncomingFile
from domain.media import UploadMissing, UploadTooLarge, UploadWrongType
from domain.errors import DomainError, InvalidInput

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

router = APIRouter(tags=["media"])
PROBLEM = "application/problem+json"
MAX_FIELDS = 16
MAX_FIELD_BYTES = 8192
UPLOAD_STATUS = {UploadTooLarge.code: 413, UploadWrongType.code: 415}


def media_store(request: Request) -> FileMediaStore:
    return request.app.state.media


Store = Annotated[FileMediaStore, Depends(media_store)]


def _problem(status: int, code: str, title: str) -> JSONResponse:
    body = {"type": "https://attendwise.dev/problems/" + code.lower().replace("_", "-"), "title": title,
            "status": status, "detail": None, "code": code}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


class _FormUpload:
    """python-multipart callbacks for one upload form. Text fields are
    collected (bounded); when the part named `file` begins, the fields before
    it must hold a token for their `key`, and the declared type (the
    Content-Type field, else the part's own header) must be the token's. Only
    then are the file's bytes streamed into the store, which stops at the
    first byte over the limit."""

    def __init__(self, store: FileMediaStore) -> None:
        self.store = store
        self.fields: dict[str, str] = {}
        self.incoming: IncomingFile | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header, self._value = b"", b""
        self._name, self._data, self._in_file, self._fields_seen = "", bytearray(), False, 0

    def callbacks(self) -> MultipartCallbacks:
        names = ("on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
                 "on_part_data", "on_part_end")
        return {name: getattr(self, name) for name in names}  # type: ignore[return-value]

    def on_part_begin(self) -> None:
        self._headers, self._data, self._in_file = {}, bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header.lower()] = self._value
        self._header, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace").lower()
        if self._name != "file":
            self._fields_seen += 1
            if self._fields_seen > MAX_FIELDS:
                raise InvalidInput(f"the form has more than {MAX_FIELDS} fields")
            return
        if self.incoming is not None:
            raise InvalidInput("the form has more than one file")
        grant = self.store.grant(self.fields.get("token", ""), self.fields.get("key", ""))
        declared = self.fields.get("content-type") or self._headers.get(b"content-type", b"").decode("latin-1")
        if declared != grant.content_type:
            raise UploadWrongType(f"the file is declared {declared!r}, the form allows {grant.content_type!r}")
        self.incoming = self.store.receive(grant)
        self._in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.incoming.write(data[start:end])  # type: ignore[union-attr]
            return
        self._data += data[start:end]
        if len(self._data) > MAX_FIELD_BYTES:
            raise InvalidInput(f"a form field is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if not self._in_file:
            self.fields.setdefault(self._name, self._data.decode("utf-8", "replace"))


async def _receive(request: Request, form: _FormUpload) -> None:
    _, params = parse_options_header(request.headers.get("content-type"))
    if b"boundary" not in params:
        raise InvalidInput("send the upload as multipart/form-data")
    parser = MultipartParser(params[b"boundary"], form.callbacks())
    try:
        async for chunk in request.stream():
            await asyncio.to_thread(parser.write, chunk)
        await asyncio.to_thread(parser.finalize)
        if form.incoming is None:
            raise UploadMissing("the form has no part named file")
        await asyncio.to_thread(form.incoming.commit)
    except BaseException:
        if form.incoming is not None:
            await asyncio.to_thread(form.incoming.abort)
        raise


@router.post(
    "/media/upload", status_code=204, response_class=Response,
    responses={403: {"description": "Bad or expired token, or a token for another key"},
               413: {"description": "Larger than the form allows"},
               415: {"description": "Declared content type differs from the form's"},
               422: {"description": "Not a well-formed upload form"}},
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["key", "token", "file"],
        "properties": {"key": {"type": "string"}, "token": {"type": "string"},
                       "Content-Type": {"type": "string"}, "file": {"type": "string", "format": "binary"}}}}}}})
async def upload(request: Request, store: Store) -> Response:
    """Store the file of an upload form from FileMediaStore.upload_form: the
    form's fields first, then the file as `file`. Written atomically: the
    object appears whole or not at all."""
    try:
        await _receive(request, _FormUpload(store))
    except MultipartParseError as e:
        return _problem(422, "INVALID_INPUT", f"not a well-formed multipart body: {e}")
    except DomainError as e:
        return _problem(UPLOAD_STATUS.get(e.code, e.status), e.code, e.message)
    return Response(status_code=204)


@router.get("/media/files/{key:path}", response_class=FileResponse,
            responses={200: {"content": {"image/*": {}}, "description": "The object, with its content type"},
                       403: {"description": "Bad or expired token, or a token for another key"},
                       404: {"description": "No object under this key"}})
def download(key: str, store: Store, token: str = "") -> Response:
    """An object, for a URL from FileMediaStore.download_url."""
    try:
        path, content_type = store.download(token, key)
    except DomainError as e:
        return _problem(e.status, e.code, e.message)
    return FileResponse(path, media_type=content_type, headers={"X-Content-Type-Options": "nosniff"})
