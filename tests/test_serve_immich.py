"""The Immich machine-learning contract over real HTTP: the requests Immich's server sends, the
answers it parses, equal to the Python API's embeddings of the same model."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import xmodal
from serve_helpers import (
    clip_vector,
    cosine,
    immich_image_request,
    immich_text_request,
    multipart,
    post_predict,
    running_server,
)
from xmodal.settings import Settings

SHIPPED = "xmodal-tiny-shapes"


def png_bytes(size=(64, 48), colour="red", shape_colour="blue") -> bytes:
    image = Image.new("RGB", size, colour)
    image.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), shape_colour), (size[0] // 4, size[1] // 4))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(size=(900, 600)) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    """A machine-learning-only server with the shipped model preloaded."""
    with running_server(Settings(preload=(SHIPPED,))) as running:
        yield running


@pytest.fixture(scope="module")
def shipped():
    return xmodal.load_model(SHIPPED)


# -- the contract --------------------------------------------------------------------------
def test_ping_answers_pong_as_plain_text(server):
    response = server.client.get("/ping")
    assert response.status_code == 200
    assert response.text == "pong"
    assert response.headers["content-type"].startswith("text/plain")


def test_text_embedding_equals_embed_texts(server, shipped):
    response = post_predict(server.client, immich_text_request(SHIPPED, "a red circle", language="de"))
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"clip"}
    got = clip_vector(response)
    want = shipped.embed_texts(["a red circle"])[0]
    assert got.shape == (shipped.dim,)
    assert cosine(got, want) >= 0.9999
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("filename", ["blob", None], ids=["node-blob", "no-filename"])
def test_image_embedding_equals_embed_images(server, shipped, tmp_path, filename):
    data = png_bytes((70, 50))
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    response = post_predict(server.client, immich_image_request(SHIPPED, data, filename=filename))
    assert response.status_code == 200, response.text
    payload = response.json()
    assert set(payload) == {"clip", "imageHeight", "imageWidth"}
    assert (payload["imageHeight"], payload["imageWidth"]) == (50, 70)
    got = clip_vector(response)
    assert cosine(got, shipped.embed_images([path])[0]) >= 0.9999


def test_jpeg_upload_decodes_like_the_file(server, shipped, tmp_path):
    """JPEGs are decoded with the model's draft size, from bytes exactly as from a path."""
    data = jpeg_bytes()
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    response = post_predict(server.client, immich_image_request(SHIPPED, data))
    assert response.status_code == 200, response.text
    assert (response.json()["imageHeight"], response.json()["imageWidth"]) == (600, 900)
    assert cosine(clip_vector(response), shipped.embed_images([path])[0]) >= 0.9999


def test_the_embedding_string_keeps_float32_values_exactly(server, shipped):
    response = post_predict(server.client, immich_text_request(SHIPPED, "a green square"))
    got = clip_vector(response)
    want = shipped.embed_texts(["a green square"])[0]
    # Shortest float32 forms read back bit for bit; the string is no longer than it must be.
    assert np.array_equal(got, want.astype(np.float32)) or np.allclose(got, want, atol=1e-6)
    assert "e+" not in response.json()["clip"] and "nan" not in response.json()["clip"].lower()


def test_model_name_as_immich_cleans_it(server, shipped):
    """Immich strips an org prefix ("immich-app/NAME") before it looks a model up; so does xmodal."""
    response = post_predict(server.client, immich_text_request(f"immich-app/{SHIPPED}", "a red circle"))
    assert response.status_code == 200, response.text
    assert cosine(clip_vector(response), shipped.embed_texts(["a red circle"])[0]) >= 0.9999


def test_urlencoded_text_request_is_accepted(server, shipped):
    entries = json.dumps({"clip": {"textual": {"modelName": SHIPPED, "options": {}}}})
    response = server.client.post("/predict", data={"entries": entries, "text": "a blue triangle"})
    assert response.status_code == 200, response.text
    assert cosine(clip_vector(response), shipped.embed_texts(["a blue triangle"])[0]) >= 0.9999


def test_test_built_clip_folder_matches_python_api(clip_model_dir: Path, tmp_path):
    """A real CLIP geometry and tokenizer (random weights), preloaded from its folder and asked for
    by its folder name, as an Immich admin would name it."""
    model = xmodal.load_model(clip_model_dir)
    data = png_bytes((96, 96), "white", "black")
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with running_server(Settings(preload=(str(clip_model_dir),))) as running:
        text = post_predict(running.client, immich_text_request(clip_model_dir.name, "A dog on a beach!"))
        image = post_predict(running.client, immich_image_request(clip_model_dir.name, data))
    assert text.status_code == 200 and image.status_code == 200, (text.text, image.text)
    assert cosine(clip_vector(text), model.embed_texts(["A dog on a beach!"])[0]) >= 0.9999
    assert cosine(clip_vector(image), model.embed_images([path])[0]) >= 0.9999
    assert clip_vector(text).shape == (model.dim,)


# -- what Immich gets when it asks for something else ---------------------------------------
@pytest.mark.parametrize(
    "entries",
    [
        {
            "facial-recognition": {
                "detection": {"modelName": "buffalo_l", "options": {"minScore": 0.7}},
                "recognition": {"modelName": "buffalo_l"},
            }
        },
        {
            "ocr": {
                "detection": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.5, "maxResolution": 736}},
                "recognition": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.8}},
            }
        },
    ],
    ids=["facial-recognition", "ocr"],
)
def test_unsupported_task_is_a_4xx_naming_the_task(server, entries):
    body = multipart(("entries", json.dumps(entries), None), ("image", png_bytes(), {"filename": "blob"}))
    response = post_predict(server.client, body)
    assert response.status_code == 400
    task = next(iter(entries))
    assert f"'{task}'" in response.json()["detail"]
    assert "clip" in response.json()["detail"]


@pytest.mark.parametrize(
    "entries, reason",
    [
        ("not json", "invalid entries"),
        ('{"clip": {"textual": {"options": {}}}}', "modelName"),
        ('{"clip": {"textual": {"modelName": ""}}}', "modelName"),
        ('["clip"]', "invalid entries"),
        ('{"clip": "ViT-B-32__openai"}', "invalid entries"),
        ('{"clip": {"pipeline": {"modelName": "x"}}}', "textual, visual"),
        ('{"clip": {}}', "textual, visual"),
        ('{"clip": {"textual": {"modelName": "xmodal-tiny-shapes", "options": {"language": 5}}}}', "options"),
    ],
)
def test_invalid_entries_get_422(server, entries, reason):
    response = post_predict(server.client, multipart(("entries", entries, None), ("text", "a cat", None)))
    assert response.status_code == 422, response.text
    assert reason in json.dumps(response.json()["detail"])


def test_missing_entries_get_422(server):
    response = post_predict(server.client, multipart(("text", "a cat", None)))
    assert response.status_code == 422
    assert "entries" in response.json()["detail"]


def test_unknown_model_is_404_naming_it(server):
    response = post_predict(server.client, immich_text_request("no-such-model__x", "a cat"))
    assert response.status_code == 404
    assert "no-such-model__x" in response.json()["detail"]


def test_model_names_never_reach_the_file_system(server, shipped, tmp_path):
    """A client cannot make the server load a folder: a name is cut to its last segment (as Immich
    does) and must then be a known or preloaded name."""
    folder = tmp_path / "copy"
    shutil.copytree(xmodal.models.registry.shipped_models()[SHIPPED], folder)
    for name in (str(folder), f"..%2F{SHIPPED}", "/etc/passwd", "..", "C:\\models\\x"):
        response = post_predict(server.client, immich_text_request(name, "a cat"))
        assert response.status_code == 404, (name, response.text)
    # "../NAME" is the known model NAME, never a path relative to anything.
    response = post_predict(server.client, immich_text_request(f"../{SHIPPED}", "a cat"))
    assert cosine(clip_vector(response), shipped.embed_texts(["a cat"])[0]) >= 0.9999


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"this is not an image", "not a recognized image format"),
        (png_bytes()[:60], "truncated"),
    ],
    ids=["text-bytes", "truncated-png"],
)
def test_bad_image_upload_is_422_with_the_reason(server, data, reason):
    response = post_predict(server.client, immich_image_request(SHIPPED, data))
    assert response.status_code == 422
    assert reason in response.json()["detail"]
    assert response.json()["detail"].startswith("image part:")


def test_empty_image_part_is_422(server):
    response = post_predict(server.client, immich_image_request(SHIPPED, b""))
    assert response.status_code == 422
    assert "empty" in response.json()["detail"]


def test_text_and_image_must_match_the_entry(server):
    visual_with_text = multipart(
        ("entries", json.dumps({"clip": {"visual": {"modelName": SHIPPED}}}), None), ("text", "a cat", None)
    )
    assert post_predict(server.client, visual_with_text).status_code == 400
    textual_with_image = multipart(
        ("entries", json.dumps({"clip": {"textual": {"modelName": SHIPPED}}}), None),
        ("image", png_bytes(), {"filename": "blob"}),
    )
    assert post_predict(server.client, textual_with_image).status_code == 400
    neither = multipart(("entries", json.dumps({"clip": {"textual": {"modelName": SHIPPED}}}), None))
    response = post_predict(server.client, neither)
    assert response.status_code == 400 and "text" in response.json()["detail"]


# -- malformed multipart -------------------------------------------------------------------
def test_malformed_multipart_bodies_get_clear_4xx(server):
    body, content_type = immich_text_request(SHIPPED, "a cat")
    cases = {
        "no boundary": (body, "multipart/form-data"),
        "truncated": (body[: len(body) // 2], content_type),
        "wrong boundary": (body, "multipart/form-data; boundary=somethingelse"),
        "garbage": (b"\x00\xff" * 200, content_type),
    }
    for label, (content, ctype) in cases.items():
        response = server.client.post("/predict", content=content, headers={"content-type": ctype})
        assert response.status_code in (400, 422), (label, response.status_code, response.text)
        assert "detail" in response.json(), label
    no_name = multipart(("entries", "{}", None)).__iter__()
    content, ctype = next(no_name), next(no_name)
    content = content.replace(b'form-data; name="entries"', b"form-data")
    response = server.client.post("/predict", content=content, headers={"content-type": ctype})
    assert response.status_code == 400 and "name" in response.json()["detail"]


def test_a_field_given_twice_is_refused(server):
    entries = json.dumps({"clip": {"textual": {"modelName": SHIPPED}}})
    body = multipart(("entries", entries, None), ("text", "a", None), ("text", "b", None))
    response = post_predict(server.client, body)
    assert response.status_code == 400 and "twice" in response.json()["detail"]


def test_other_content_types_get_415(server):
    response = server.client.post("/predict", json={"entries": {}})
    assert response.status_code == 415


def test_text_is_utf8(server):
    entries = json.dumps({"clip": {"textual": {"modelName": SHIPPED}}})
    response = post_predict(server.client, multipart(("entries", entries, None), ("text", b"\xff\xfe bad", None)))
    assert response.status_code == 422 and "UTF-8" in response.json()["detail"]
