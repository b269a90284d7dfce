"""The library over real HTTP (uvicorn on 127.0.0.1): search by text, item, uploaded image and
combined, equal to `Library.search` serialised; item details; thumbnails made once, with ETag/304;
originals and videos with range requests; traversal attempts in several encodings; paths never
outside the library's folders; status; metrics."""

from __future__ import annotations

import http.client
import io
import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from serve_helpers import multipart, running_server, shapes_library, write_video
from test_serve_api import metric
from xmodal.library import Library
from xmodal.settings import Settings

SECRET = b"xmodal-test-secret: this must never be served\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """48 synth-shapes photos and a short video indexed with the shipped model, a secret file beside
    the library's folder, and a server over them."""
    folder = tmp_path_factory.mktemp("served")
    shapes = shapes_library(folder)
    video = write_video(shapes.photos / "clip.mp4")
    shapes.library.index()  # the video too: grey levels rising, so every frame is blank (indexed with a note)
    (folder / "secret.txt").write_bytes(SECRET)
    (shapes.photos.parent / "secret.txt").write_bytes(SECRET)
    settings = Settings(max_upload_bytes=256 << 10, max_query_chars=200)
    with running_server(settings, shapes.library) as server:
        yield server, shapes, video
    shapes.library.close()


def photo_bytes(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def item_of(shapes, path: Path) -> int:
    return shapes.library.catalog.item_by_path(str(path)).id


# -- search ----------------------------------------------------------------------------------
def test_text_search_is_the_library_search_serialised(served):
    server, shapes, _ = served
    answer = server.client.get("/api/search", params={"q": "a red circle", "k": 5})
    assert answer.status_code == 200
    assert answer.json() == shapes.library.search("a red circle", k=5).to_dict()
    top = answer.json()["hits"][0]
    assert top["rank"] == 1 and top["type"] == "image"
    assert shapes.shows(top["path"], "red", "circle"), top["path"]


def test_every_search_parameter_reaches_the_library(served):
    server, shapes, _ = served
    lib, get = shapes.library, server.client.get
    cases = [
        ({"q": "a blue square", "k": 7, "moments": 0}, dict(text="a blue square", k=7, moments=0)),
        ({"q": "a green star", "type": "image,video"}, dict(text="a green star", type=["image", "video"])),
        ({"q": "a green star", "path": "*/00001*"}, dict(text="a green star", path_glob="*/00001*")),
        ({"q": "red", "after": "2000", "before": "2100-01-01"}, dict(text="red", after="2000", before="2100-01-01")),
        ({"q": "a yellow cross", "decay_days": 30}, dict(text="a yellow cross", decay_days=30.0)),
        ({"q": "a yellow cross", "min_score": 0.2}, dict(text="a yellow cross", min_score=0.2)),
    ]
    for params, call in cases:
        assert get("/api/search", params=params).json() == lib.search(**call).to_dict(), params
    repeated = get("/api/search", params=[("q", "a red circle"), ("type", "image"), ("type", "video")])
    assert repeated.json() == lib.search("a red circle", type=["image", "video"]).to_dict()
    (clip,) = get("/api/search", params={"q": "a red circle", "type": "video", "min_score": -1}).json()["hits"]
    assert clip["type"] == "video" and clip["timestamp"] == 0.0 and clip["duration"] == 3.0
    assert clip["moments"] == [{"start": 0.0, "end": 3.0, "score": clip["score"]}]  # one moment: all blank
    globbed = get("/api/search", params={"q": "a red circle", "path": "*/00001*", "k": 50}).json()["hits"]
    assert globbed and all(os.path.basename(h["path"]).startswith("00001") for h in globbed)


def test_no_good_match_is_said_as_such(served):
    server, _, _ = served
    answer = server.client.get("/api/search", params={"q": "a red circle", "min_score": 0.99}).json()
    assert answer["hits"] == [] and answer["no_good_match"] is True
    assert answer["min_score"] == 0.99 and 0 < answer["best_score"] < 0.99


def test_more_like_this_and_combined_queries(served):
    server, shapes, _ = served
    path = sorted(shapes.scenes)[7]
    item = item_of(shapes, Path(path))
    like = server.client.get("/api/search", params={"item": item, "k": 4}).json()
    assert like["hits"][0]["item_id"] == item and like["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert like == shapes.library.search(item=item, k=4).to_dict()
    combined = server.client.get("/api/search", params={"q": "a red circle", "item": item}).json()
    assert combined == shapes.library.search("a red circle", item=item).to_dict()
    terms = server.client.get("/api/search", params={"q": f"2:a red circle - #{item}"}).json()
    assert terms == shapes.library.search(f"2:a red circle - #{item}").to_dict()


def test_search_by_uploaded_image(served):
    server, shapes, _ = served
    path = sorted(shapes.scenes)[3]
    data = photo_bytes(path)
    body, content_type = multipart(("image", data, {"filename": "query.jpg"}), ("k", "3", None))
    answer = server.client.post("/api/search", content=body, headers={"content-type": content_type})
    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    assert hits[0]["path"] == path and hits[0]["score"] == pytest.approx(1.0, abs=1e-3) and len(hits) == 3
    assert answer.json() == shapes.library.search(image=data, k=3).to_dict()
    # with text and filters, as the page sends it (browser FormData: a file part with its type)
    files = {"image": ("query.jpg", data, "image/jpeg")}
    fields = {"q": "a red circle", "type": "image", "k": "5"}
    combined = server.client.post("/api/search", data=fields, files=files).json()
    assert combined == shapes.library.search("a red circle", image=data, type="image", k=5).to_dict()


def test_bad_search_requests_are_422_with_the_reason(served):
    server, _, _ = served
    get = server.client.get
    for params, reason in [
        ({}, "give a text"),
        ({"q": "x", "k": 1001}, "less than or equal to 1000"),
        ({"q": "x", "k": 0}, "greater than or equal to 1"),
        ({"q": "x", "k": "ten"}, "valid integer"),
        ({"q": "x", "type": "photo"}, "'image', 'video' or 'text'"),
        ({"q": "x", "after": "yesterday"}, "a date like 2024"),
        ({"q": "x", "min_score": 2}, "less than or equal to 1"),
        ({"q": "x", "decay_days": 0}, "greater than 0"),
        ({"q": "x", "item": 999999}, "the id of an indexed item"),
        ({"q": "x" * 201}, "XMODAL_MAX_QUERY_CHARS"),
        ({"q": "x", "model": "ViT-B-32__openai"}, "has not indexed this library"),
        ({"q": "x", "colour": "red"}, "Extra inputs are not permitted"),
    ]:
        answer = get("/api/search", params=params)
        assert answer.status_code == 422, (params, answer.text)
        assert reason in answer.text, (params, answer.text)
        assert "Traceback" not in answer.text


def test_a_query_naming_a_file_is_words_not_a_file(served):
    """The CLI reads `./photo.jpg` in a query as an image file; over HTTP that would let a client
    open any file by name, so the same words are only text."""
    server, shapes, _ = served
    photo = sorted(shapes.scenes)[0]
    for q in (photo, "/etc/passwd", f"a red circle + {photo}", "../secret.txt"):
        answer = server.client.get("/api/search", params={"q": q, "k": 3, "min_score": -1})
        assert answer.status_code == 200, (q, answer.text)
        assert answer.json() == shapes.library.search(q, k=3, min_score=-1, path_terms=False).to_dict()
    by_file = server.client.get("/api/search", params={"q": photo, "k": 1}).json()["hits"][0]
    assert by_file["score"] < 0.999  # not the photo's own vector: its path was embedded as words


def test_bad_uploads(served):
    server, _, _ = served
    post = server.client.post

    def send(*parts, content_type=None):
        body, default = multipart(*parts)
        return post("/api/search", content=body, headers={"content-type": content_type or default})

    not_image = send(("image", b"this is not an image at all", {"filename": "x.jpg"}))
    assert not_image.status_code == 422 and "not a recognized image format" in not_image.json()["detail"]
    truncated = send(("image", photo_bytes(sorted(served[1].scenes)[0])[:300], {"filename": "x.jpg"}))
    assert truncated.status_code == 422 and "truncated" in truncated.json()["detail"]
    empty = send(("image", b"", {"filename": "x.jpg"}))
    assert empty.status_code == 422 and "empty" in empty.json()["detail"]
    bad_field = send(("image", b"\x89PNG", {"filename": "x.png"}), ("k", "many", None))
    assert bad_field.status_code == 422 and "valid integer" in bad_field.text
    twice = send(("q", "a", None), ("q", "b", None))
    assert twice.status_code == 400 and "given twice" in twice.json()["detail"]
    no_boundary = post("/api/search", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and "boundary" in no_boundary.json()["detail"]
    body, content_type = multipart(("q", "a red circle", None))
    cut = post("/api/search", content=body[: len(body) // 2], headers={"content-type": content_type})
    assert cut.status_code == 400 and "malformed multipart" in cut.json()["detail"]
    as_json = post("/api/search", json={"q": "a red circle"})
    assert as_json.status_code == 415
    # An upload declared over the limit is refused before a byte of it is read.
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.putrequest("POST", "/api/search")
        connection.putheader("content-type", "multipart/form-data; boundary=x")
        connection.putheader("content-length", str(300 << 10))
        connection.endheaders()
        huge = connection.getresponse()
        assert huge.status == 413 and b"XMODAL_MAX_UPLOAD_BYTES" in huge.read()
    finally:
        connection.close()
    assert server.client.get("/api/search", params={"q": "a red circle"}).status_code == 200


# -- items, thumbnails, originals ----------------------------------------------------------------
def test_item_details(served):
    server, shapes, video = served
    path = sorted(shapes.scenes)[5]
    item = item_of(shapes, Path(path))
    details = server.client.get(f"/api/items/{item}").json()
    stat = os.stat(path)
    assert details["item_id"] == item and details["path"] == path and details["name"] == os.path.basename(path)
    assert details["type"] == "image" and details["status"] == "ok" and details["size"] == stat.st_size
    assert (details["width"], details["height"]) == (128, 128)
    assert details["models"] == ["xmodal-tiny-shapes"]
    assert details["thumbnail"] == f"/api/items/{item}/thumbnail" and details["file"] == f"/api/items/{item}/file"
    clip = server.client.get(f"/api/items/{item_of(shapes, video)}").json()
    assert clip["type"] == "video" and clip["status"] == "ok" and clip["models"] == ["xmodal-tiny-shapes"]
    assert (clip["duration"], clip["fps"], clip["codec"], clip["width"], clip["height"]) == (3.0, 12.0, "h264", 64, 48)
    assert (
        clip["details"]["frame_times"] == [0.0] and "all 3 sampled frames are near-black" in clip["details"]["notes"][0]
    )
    assert server.client.get("/api/items/999999").status_code == 404
    assert server.client.get("/api/items/0").status_code == 422
    assert server.client.get("/api/items/abc").status_code == 422


def test_thumbnail_is_made_once_and_revalidated_by_etag(served):
    server, shapes, _ = served
    path = sorted(shapes.scenes)[9]
    record = shapes.library.catalog.item_by_path(path)
    first = server.client.get(f"/api/items/{record.id}/thumbnail", params={"size": 128})
    assert first.status_code == 200 and first.headers["content-type"] == "image/webp"
    assert first.headers["cache-control"].startswith("private") and record.content_hash in first.headers["etag"]
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "WEBP" and max(image.size) == 128
    kept = shapes.library.folder / "thumbnails" / "128" / record.content_hash[:2] / f"{record.content_hash}.webp"
    assert kept.read_bytes() == first.content
    made_at = kept.stat().st_mtime_ns
    again = server.client.get(f"/api/items/{record.id}/thumbnail", params={"size": 128})
    assert again.content == first.content and kept.stat().st_mtime_ns == made_at  # served from the cache
    not_modified = server.client.get(
        f"/api/items/{record.id}/thumbnail", params={"size": 128}, headers={"if-none-match": first.headers["etag"]}
    )
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == first.headers["etag"]
    weak_list = server.client.get(
        f"/api/items/{record.id}/thumbnail",
        params={"size": 128},
        headers={"if-none-match": f'"x", W/{first.headers["etag"]}'},
    )
    assert weak_list.status_code == 304
    default = server.client.get(f"/api/items/{record.id}/thumbnail")
    assert max(Image.open(io.BytesIO(default.content)).size) == 128  # never enlarged past the photo's size
    assert default.headers["etag"] != first.headers["etag"]  # another size, another ETag
    wrong = server.client.get(f"/api/items/{record.id}/thumbnail", params={"size": 300})
    assert wrong.status_code == 422 and "128, 256, 512, 1024" in wrong.json()["detail"]
    assert not list(kept.parent.glob(".*.part"))  # no temporary file left behind


def test_video_thumbnail_and_stream_with_ranges(served):
    server, shapes, video = served
    item = item_of(shapes, video)
    poster = server.client.get(f"/api/items/{item}/thumbnail")
    assert poster.status_code == 200 and Image.open(io.BytesIO(poster.content)).size == (64, 48)
    data = video.read_bytes()
    whole = server.client.get(f"/api/items/{item}/file")
    assert whole.status_code == 200 and whole.content == data and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-disposition"].startswith("inline")
    first = server.client.get(f"/api/items/{item}/file", headers={"range": "bytes=0-99"})
    assert first.status_code == 206 and first.content == data[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{len(data)}"
    tail = server.client.get(f"/api/items/{item}/file", headers={"range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    rest = server.client.get(f"/api/items/{item}/file", headers={"range": f"bytes={len(data) - 10}-"})
    assert rest.status_code == 206 and rest.content == data[-10:]
    several = server.client.get(f"/api/items/{item}/file", headers={"range": "bytes=0-9,200-209"})
    assert several.status_code == 206 and several.headers["content-type"].startswith("multipart/byteranges")
    assert data[:10] in several.content and data[200:210] in several.content
    beyond = server.client.get(f"/api/items/{item}/file", headers={"range": f"bytes={len(data) + 5}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    backwards = server.client.get(f"/api/items/{item}/file", headers={"range": "bytes=50-10"})
    assert backwards.status_code in (400, 416)
    head = server.client.head(f"/api/items/{item}/file")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(data))
    # If-Range with the current ETag honours the range; with another one the whole file comes
    etag = whole.headers["etag"]
    assert (
        server.client.get(f"/api/items/{item}/file", headers={"range": "bytes=0-9", "if-range": etag}).status_code
        == 206
    )
    stale = server.client.get(f"/api/items/{item}/file", headers={"range": "bytes=0-9", "if-range": '"old"'})
    assert stale.status_code == 200 and stale.content == data
    assert server.client.get(f"/api/items/{item}/file", headers={"if-none-match": etag}).status_code == 304


def test_original_photo_is_served_inline_and_sandboxed(served):
    server, shapes, _ = served
    path = sorted(shapes.scenes)[2]
    answer = server.client.get(f"/api/items/{item_of(shapes, Path(path))}/file")
    assert answer.status_code == 200 and answer.content == photo_bytes(path)
    assert answer.headers["content-type"] == "image/jpeg"
    assert "sandbox" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"


TRAVERSALS = [
    "/api/items/../../secret.txt",
    "/api/items/..%2F..%2Fsecret.txt/file",
    "/api/items/%2e%2e%2f%2e%2e%2fsecret.txt/file",
    "/api/items/%252e%252e%252fsecret.txt/file",
    "/api/items/..%5C..%5Csecret.txt/file",
    "/api/items/..\\..\\secret.txt/file",
    "/api/items/%2Fetc%2Fpasswd/file",
    "/api/items//etc/passwd/file",
    "/api/items/1%00/file",
    "/api/items/1%00../../secret.txt/file",
    "/api/items/1/file/../../../secret.txt",
    "/api/items/1/file?path=../../secret.txt",
    "/api/items/-1/file",
    "/api/items/1e3/file",
    "/api/items/0x1/file",
    "/static/../secret.txt",
    "/static/%2e%2e/%2e%2e/secret.txt",
    "/static/..%2f..%2fsecret.txt",
    "/static/docs/..%2f..%2f..%2fsecret.txt",
    "/api/items/%u002e%u002e/file",
    "/%2e%2e/%2e%2e/secret.txt",
]


@pytest.mark.parametrize("raw", TRAVERSALS)
def test_traversal_attempts_never_reach_a_file(served, raw):
    """Sent byte for byte (no client-side normalisation): each is refused or serves only what the
    id names, never the secret beside the library's folder."""
    server, shapes, _ = served
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.putrequest("GET", raw, skip_accept_encoding=True)
        connection.endheaders()
        answer = connection.getresponse()
        body = answer.read()
    finally:
        connection.close()
    assert b"xmodal-test-secret" not in body
    assert b"root:" not in body
    if answer.status == 200:  # only the file item 1 names, whatever else the request says
        assert (
            raw.startswith("/api/items/1/file?")
            and body == Path(shapes.library.catalog.items_by_id([1])[1].path).read_bytes()
        )
    else:
        assert answer.status in (400, 404, 422), (raw, answer.status, body[:200])


def test_listings_never_show_paths_outside_the_library_folders(served):
    server, shapes, _ = served
    root = str(shapes.photos)
    seen = []
    for q in ("a red circle", "secret", "a blue square", "text file", "password"):
        seen += [
            h["path"]
            for h in server.client.get("/api/search", params={"q": q, "k": 1000, "min_score": -1}).json()["hits"]
        ]
    assert len(set(seen)) == 49  # every photo and the video, never anything else
    assert all(p.startswith(root + os.sep) for p in seen)
    status = server.client.get("/api/status").json()
    assert [r["path"] for r in status["roots"]] == [root]
    assert status["items"] == {"image": 48, "video": 1, "text": 0} and status["pending"]["video"] == 0
    text = server.client.get("/api/status").text
    assert str(shapes.library.folder) not in text  # nor where the library itself lives


def flat_photos_library(folder: Path, **photos: tuple[tuple[int, int], str]) -> tuple[Path, Library]:
    """A library of flat-colour photos named name.png with (size, colour), indexed with the shipped model."""
    (folder / "photos").mkdir()
    for name, (size, colour) in photos.items():
        Image.new("RGB", size, colour).save(folder / "photos" / f"{name}.png")
    library = Library(folder / "lib")
    library.index([folder / "photos"], model="xmodal-tiny-shapes")
    return (folder / "photos").resolve(), library


def test_a_file_swapped_for_a_link_outside_is_refused(tmp_path):
    photos, library = flat_photos_library(tmp_path, p0=((40, 40), "red"), p1=((40, 40), "blue"))
    secret = tmp_path / "secret.png"
    secret.write_bytes(SECRET)
    with library as lib:
        item = lib.catalog.item_by_path(str(photos / "p0.png")).id
        (photos / "p0.png").unlink()
        (photos / "p0.png").symlink_to(secret)
        with running_server(Settings(), lib) as server:
            for route in ("file", "thumbnail"):
                answer = server.client.get(f"/api/items/{item}/{route}")
                assert answer.status_code == 403, (route, answer.text)
                assert "outside the library's folders" in answer.json()["detail"] and b"secret" not in answer.content
            (photos / "p0.png").unlink()
            gone = server.client.get(f"/api/items/{item}/file")
            assert gone.status_code == 404 and "gone" in gone.json()["detail"]


def test_a_changed_file_gets_a_fresh_thumbnail_not_kept(tmp_path):
    photos, library = flat_photos_library(tmp_path, p=((60, 30), "red"))
    with library as lib:
        item = lib.catalog.item_by_path(str(photos / "p.png")).id
        with running_server(Settings(), lib) as server:
            before = server.client.get(f"/api/items/{item}/thumbnail")
            Image.new("RGB", (30, 60), "blue").save(photos / "p.png")  # edited since it was indexed
            after = server.client.get(f"/api/items/{item}/thumbnail")
            assert before.headers["etag"] != after.headers["etag"]
            assert Image.open(io.BytesIO(after.content)).size == (30, 60)
            assert len(list((tmp_path / "lib" / "thumbnails").rglob("*.webp"))) == 1  # only the indexed content's


def test_thumbnails_that_cannot_be_kept_are_made_per_request(tmp_path):
    _, library = flat_photos_library(tmp_path, p=((50, 50), "green"))
    with library as lib:
        (tmp_path / "lib" / "thumbnails").write_bytes(b"")  # the cache folder cannot be made (read-only alike)
        with running_server(Settings(), lib) as server:
            for _ in range(2):
                answer = server.client.get("/api/items/1/thumbnail")
                assert answer.status_code == 200 and answer.headers["content-type"] == "image/webp"
                assert Image.open(io.BytesIO(answer.content)).size == (50, 50)


# -- the server as a whole -------------------------------------------------------------------------
def test_library_metrics(served):
    server, _, _ = served
    for q in ("a red circle", "a blue square"):
        server.client.get("/api/search", params={"q": q})
    server.client.get("/api/search", params={"item": 1})
    text = server.client.get("/metrics").text
    assert metric(text, "xmodal_searches_total", kind="text") >= 2
    assert metric(text, "xmodal_searches_total", kind="item") >= 1
    assert metric(text, "xmodal_search_duration_seconds_count", kind="text") >= 2
    assert metric(text, "xmodal_library_items", type="image", status="ok") == 48
    assert metric(text, "xmodal_library_items", type="video", status="ok") == 1
    assert metric(text, "xmodal_index_run_state", xmodal_index_run_state="idle") == 1
    assert metric(text, "xmodal_http_request_duration_seconds_count", method="GET", route="/api/search") >= 3


def test_openapi_describes_the_library_api(served):
    server, _, _ = served
    schema = server.client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/api/search", "/api/items/{item_id}", "/api/items/{item_id}/thumbnail", "/api/items/{item_id}/file"):
        assert path in paths, path
    assert {"get", "post"} <= set(paths["/api/search"])
    assert {p["name"] for p in paths["/api/search"]["get"]["parameters"]} >= {"q", "item", "k", "type", "path"}
    assert "/api/index/events" in paths and "post" in paths["/api/index"]
    assert server.client.get("/api/info").json()["library"] is True


def test_ml_only_server_says_it_has_no_library():
    with running_server(Settings()) as server:
        for path in ("/api/search?q=x", "/api/status", "/api/items/1", "/api/index", "/api/index/events"):
            answer = server.client.get(path)
            assert answer.status_code == 503 and "machine learning only" in answer.json()["detail"], path
        assert server.client.get("/api/info").json()["library"] is False


def test_the_page_and_thumbnails_with_the_key_as_a_cookie(served):
    server, shapes, _ = served
    key = "library-key"
    with running_server(Settings(api_key=key), shapes.library) as keyed:
        assert keyed.client.get("/api/search", params={"q": "a red circle"}).status_code == 401
        assert keyed.client.get("/api/items/1/thumbnail").status_code == 401
        assert keyed.client.get("/api/items/1/file").status_code == 401
        assert keyed.client.get("/api/index/events").status_code == 401
        assert keyed.client.get("/api/search", params={"q": "x"}, headers={"x-api-key": key}).status_code == 200
        keyed.client.post("/api/session", json={"api_key": key})
        assert keyed.client.get("/api/items/1/thumbnail").status_code == 200
        assert keyed.client.get("/api/items/1/file", headers={"range": "bytes=0-3"}).status_code == 206


def test_cli_serves_a_library_and_refuses_a_missing_one(served, tmp_path):
    import subprocess
    import sys

    from test_serve_api import SRC

    _, shapes, _ = served
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("XMODAL_API_KEY", None)
    missing = subprocess.run(
        [sys.executable, "-m", "xmodal", "serve", "--library", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert missing.returncode == 1
    assert "no library at" in missing.stderr and "--ml-only" in missing.stderr and "Traceback" not in missing.stderr
    copy = tmp_path / "copy"
    shutil.copytree(shapes.library.folder, copy)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "xmodal", "serve", "--library", str(copy), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        import httpx

        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline and answer is None:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/api/search", params={"q": "a red circle", "k": 3}, timeout=5
                )
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer is not None and answer.status_code == 200
        assert answer.json() == shapes.library.search("a red circle", k=3).to_dict()
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "serving library" in output and "48 images" in output
