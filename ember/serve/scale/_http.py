"""A minimal HTTP/1.1 client on asyncio for the loopback calls between the processes of a group.

One request per connection (``Connection: close``); bodies with a ``Content-Length`` or read to
the end. The servers are ours (uvicorn on 127.0.0.1), so no TLS, redirects or chunked uploads.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

__all__ = ["fetch"]


async def fetch(
    url: str,
    method: str = "GET",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """Sends one request; returns ``(status, body)``.

    Raises:
        OSError: the server cannot be reached, or answered nothing within ``timeout``.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target or '/'} HTTP/1.1", f"Host: {host}:{port}",
             "Connection: close", f"Content-Length: {len(body)}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError as exc:
        raise OSError(f"{url}: no connection within {timeout}s") from exc
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = await asyncio.wait_for(reader.read(), timeout)
    except asyncio.TimeoutError as exc:
        raise OSError(f"{url}: no answer within {timeout}s") from exc
    finally:
        writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError(f"{url}: not an HTTP answer: {head[:80]!r}")
    return int(status_line[1]), payload
