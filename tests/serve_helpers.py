"""A real xmodal server on 127.0.0.1 for tests: uvicorn in a thread on a free port, stopped after."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI

from xmodal.serve import create_app, make_server
from xmodal.settings import Settings


@dataclass
class RunningServer:
    url: str
    app: FastAPI
    client: httpx.Client


@contextmanager
def running_server(
    settings: Settings | None = None, library: Any | None = None, embeddings: Any | None = None, **overrides: Any
) -> Iterator[RunningServer]:
    """Start the app for `settings` (plus overrides) and a library or an embeddings folder under
    uvicorn; yield once /healthz answers."""
    settings = settings or Settings()
    if overrides:
        from dataclasses import replace

        settings = replace(settings, **overrides)
    app = create_app(settings, library, embeddings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_server(app, settings, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, thread)
        with httpx.Client(base_url=url, timeout=60) as client:
            yield RunningServer(url, app, client)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _wait_healthy(url: str, thread: threading.Thread, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the server thread ended before it answered /healthz")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url}/healthz did not answer within {timeout} s")


def multipart(*parts: tuple[str, bytes | str, dict[str, str] | None]) -> tuple[bytes, str]:
    """Build a multipart/form-data body by hand, byte for byte: each part is (name, data, extra
    Content-Disposition params or headers). Returns (body, content type)."""
    boundary = "----xmodaltest" + uuid.uuid4().hex
    chunks = []
    for name, data, extra in parts:
        extra = dict(extra or {})
        headers = extra.pop("headers", "")
        params = "".join(f'; {key}="{value}"' for key, value in extra.items())
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{params}\r\n{headers}\r\n'.encode()
        )
        chunks.append(data.encode() if isinstance(data, str) else data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def immich_text_request(model: str, text: str, language: str | None = None) -> tuple[bytes, str]:
    """What Immich's server sends to embed a search text (FormData: entries + text)."""
    options = {} if language is None else {"language": language}
    entries = {"clip": {"textual": {"modelName": model, "options": options}}}
    return multipart(("entries", json.dumps(entries), None), ("text", text, None))


def immich_image_request(model: str, image: bytes, *, filename: str | None = "blob") -> tuple[bytes, str]:
    """What Immich's server sends to embed an image: entries + the file as a Blob (Node names it
    "blob"; filename=None sends the part with no file name at all)."""
    entries = {"clip": {"visual": {"modelName": model}}}
    extra: dict[str, str] = {"headers": "Content-Type: application/octet-stream\r\n"}
    if filename is not None:
        extra["filename"] = filename
    return multipart(("entries", json.dumps(entries), None), ("image", image, extra))


def post_predict(client: httpx.Client, body: tuple[bytes, str], **headers: str) -> httpx.Response:
    content, content_type = body
    return client.post("/predict", content=content, headers={"content-type": content_type, **headers})


def clip_vector(response: httpx.Response) -> np.ndarray:
    """Read Immich's `clip` field as Immich does: a JSON string holding the array."""
    payload = response.json()
    assert isinstance(payload["clip"], str)
    return np.asarray(json.loads(payload["clip"]), dtype=np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- a served library ------------------------------------------------------------------------
SHIPPED = "xmodal-tiny-shapes"


@dataclass
class ShapesLibrary:
    """A library of synth-shapes photos indexed with the shipped model, and what each photo shows."""

    library: Any
    photos: Path  # the folder indexed (the library's one root)
    scenes: dict[str, list]  # photo path -> its shapes (xmodal.datasets.shapes.Shape)

    def shows(self, path: str, color: str, kind: str) -> bool:
        return any(s.color == color and s.kind == kind for s in self.scenes[path])


def shapes_library(folder: Path, n: int = 48, seed: int = 3) -> ShapesLibrary:
    """`n` photos from `xmodal datasets synth-shapes` (its Python API) under folder/photos, indexed into
    folder/library with the shipped model."""
    from xmodal.datasets import SynthConfig, generate_synth_shapes
    from xmodal.datasets.shapes import annotated_scenes
    from xmodal.eval import ReadOptions, read_dataset
    from xmodal.library import Library

    annotations = generate_synth_shapes(folder / "photos", SynthConfig(n=n, seed=seed))
    dataset = read_dataset(f"karpathy:{annotations}", ReadOptions(split=None))
    scenes = {os.path.realpath(p): s for p, s in zip(map(str, dataset.items), annotated_scenes(dataset), strict=True)}
    library = Library(folder / "library")
    library.index([folder / "photos" / "images"], model=SHIPPED)
    return ShapesLibrary(library, Path(os.path.realpath(folder / "photos" / "images")), scenes)


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """(event name, JSON data) of a text/event-stream response, as an EventSource reads them."""
    name, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def write_video(path: Path, frames: int = 36, size: tuple[int, int] = (64, 48), rate: int = 12) -> Path:
    """A small real H.264 MP4 (PyAV's libx264): frame i is a flat grey of level 6 * i."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            pixels = np.full((size[1], size[0], 3), 6 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
