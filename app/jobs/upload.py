"""A multipart upload (`POST /v1/files`) read as a stream: the form fields kept (small, capped), the file
part's bytes handed on chunk by chunk as they arrive (to storage), counted in bytes and lines against the
caps as they pass. Nothing holds more than one received chunk of the file at a time."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import InvalidRequest, PayloadTooLarge

FIELD_BYTES = 4096  # a form field (purpose, expires_after) is a short word
# parts of the form: the file and a few fields (OpenAI's: purpose, expires_after[anchor], [seconds]). Each field
# is kept by name: a 45 MB body of 800,000 empty fields held 88 MB and took 14 s to parse
MAX_PARTS = 16


class MultipartFile:
    """Feed it the request body (`file_chunks`); afterwards `fields`, `filename`, `size`, `lines`."""

    def __init__(self, content_type: str, *, max_bytes: int, max_lines: int) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise InvalidRequest("body: send multipart/form-data with a `file` part and a `purpose` field",
                                 param="file")  # fmt: skip
        self.max_bytes, self.max_lines = max_bytes, max_lines
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = self.lines = 0
        self._last = b"\n"
        self._header = self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._in_file = self._seen_file = False
        self._parts = 0
        self._field = bytearray()
        self._out: list[bytes] = []
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_header_field": self._hfield, "on_header_value": self._hvalue,
            "on_header_end": self._hend, "on_headers_finished": self._hdone, "on_part_data": self._data,
            "on_part_end": self._end,
        })  # fmt: skip

    async def file_chunks(self, body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in body:
                self.parser.write(chunk)
                if self._out:
                    data = b"".join(self._out)
                    self._out.clear()
                    yield data
            self.parser.finalize()
        except FormParserError:
            raise InvalidRequest("body: not a valid multipart/form-data body", param="file") from None
        if not self._seen_file:
            raise InvalidRequest("file: the form has no `file` part", param="file")
        if self._last != b"\n":
            self.lines += 1  # a last line without its newline
        if self.lines > self.max_lines:
            raise InvalidRequest(f"file: more than {self.max_lines} lines (requests)", param="file")

    def _begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise InvalidRequest(f"body: more than {MAX_PARTS} parts in the form (a file, a few fields)", param="body")
        self._headers, self._field, self._name = {}, bytearray(), None

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _hend(self) -> None:
        self._headers[self._header.lower()] = self._value
        self._header = self._value = b""

    def _hdone(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        self._in_file = b"filename" in options or self._name == "file"
        if self._in_file:
            if self._seen_file:
                raise InvalidRequest("file: send one file per upload", param="file")
            self._seen_file = True
            self.filename = options.get(b"filename", b"upload.jsonl").decode("utf-8", "replace")[:255]

    def _data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if not self._in_file:
            self._field += piece
            if len(self._field) > FIELD_BYTES:
                raise InvalidRequest(f"{self._name}: longer than {FIELD_BYTES} bytes", param=self._name)
            return
        self.size += len(piece)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(f"file: larger than {self.max_bytes} bytes", param="file")
        if piece:
            self.lines += piece.count(b"\n")
            self._last = piece[-1:]
            if self.lines > self.max_lines:
                raise InvalidRequest(f"file: more than {self.max_lines} lines (requests)", param="file")
            self._out.append(piece)

    def _end(self) -> None:
        if not self._in_file and self._name:
            self.fields[self._name] = self._field.decode("utf-8", "replace")
        self._in_file = False
