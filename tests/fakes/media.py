"""Small real media files made here (PNG, PDF, WAV), and a stand-in for the public URLs that
LangChain's standard media tests download: those tests may be served local bytes."""

from __future__ import annotations

import functools
import io
import math
import struct
import wave
import zlib

import httpx
import pytest

__all__ = ["pdf", "png", "serve_public_media", "wav"]


@functools.cache
def png(width: int = 8, height: int = 8) -> bytes:
    """A valid RGB PNG with a gradient."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 30 % 256, y * 30 % 256, 200)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@functools.cache
def pdf() -> bytes:
    """A one-page PDF that says "Dummy", with a correct xref table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R >>",
        b"<< /Length 35 >>\nstream\nBT /F1 12 Tf 20 50 Td (Dummy) Tj ET\nendstream",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (
        f"trailer << /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out


@functools.cache
def wav() -> bytes:
    """A tenth of a second of a sine tone, 8 kHz mono 16-bit."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8))) for i in range(800)))
    return buf.getvalue()


def serve_public_media(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer ``httpx.get`` of public ``.png``/``.pdf``/``.wav`` URLs with the files above."""
    real_get = httpx.get
    media = {
        ".png": (png, "image/png"),
        ".pdf": (pdf, "application/pdf"),
        ".wav": (wav, "audio/wav"),
    }

    def get(url: object, *args: object, **kwargs: object) -> httpx.Response:
        for ext, (make, kind) in media.items():
            if str(url).startswith("https://") and str(url).split("?", 1)[0].endswith(ext):
                return httpx.Response(
                    200,
                    content=make(),
                    headers={"content-type": kind},
                    request=httpx.Request("GET", str(url)),
                )
        return real_get(url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx, "get", get)
