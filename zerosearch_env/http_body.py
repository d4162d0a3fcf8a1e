"""Reading a request body with a size limit, for the two HTTP servers (retrieval and engine)."""

from __future__ import annotations

from typing import Any


class BodyTooLarge(Exception):
    """The body is over the limit: answer HTTP 413 with this message."""


async def read_limited_body(request: Any, max_bytes: int) -> bytes:
    """The body of a Starlette `request`, refused as soon as it is known to exceed `max_bytes`.

    A declared Content-Length over the limit is refused before anything is read; a body without
    one (chunked) is refused while streaming, so an oversize body is never held in memory.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"the body has {declared} bytes; the limit is {max_bytes}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise BodyTooLarge(f"the body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
