"""The server's own behaviour over real HTTP: auth, limits, timeouts, CORS, errors, metrics, the
model cache's idle unloading, and inference off the event loop."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

import xmodal
from serve_helpers import clip_vector, cosine, immich_image_request, immich_text_request, post_predict, running_server
from xmodal.errors import InvalidArgumentError
from xmodal.serve import embeddings_api, library_api
from xmodal.serve.security import UnsafeBindError, check_bind, is_loopback
from xmodal.settings import Settings

SHIPPED = "xmodal-tiny-shapes"
KEY = "s3cret-key-for-tests"
PUBLIC = {"/ping", "/healthz", "/", "/api/session"}
SRC = Path(__file__).resolve().parents[1] / "src"


def big_png(side: int = 4000) -> bytes:
    """A small file that takes real time to decode: a large flat image."""
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def protected_routes(app) -> list[tuple[str, str]]:
    """Every (method, path) the app routes, but the public ones; path parameters filled in."""
    routes = []
    for route in _flatten(app.routes):
        methods = getattr(route, "methods", None) or set()
        path = getattr(route, "path", "")
        if path in PUBLIC or not methods or path.startswith("/static"):
            continue
        routes += [(m, path.replace("{", "").replace("}", "")) for m in sorted(methods - {"HEAD"})]
    return routes


def _flatten(routes):
    for route in routes:
        included = getattr(route, "original_router", None)  # a router added with include_router
        yield from _flatten(included.routes) if included is not None else [route]


# -- auth ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed():
    with running_server(Settings(api_key=KEY, preload=(SHIPPED,))) as running:
        yield running


def test_every_route_but_the_public_ones_needs_the_key(keyed):
    routes = protected_routes(keyed.app)
    assert ("POST", "/predict") in routes and ("GET", "/metrics") in routes and ("GET", "/docs") in routes
    for method, path in routes:
        response = keyed.client.request(method, path)
        assert response.status_code == 401, (method, path, response.status_code)
        assert "API key" in response.json()["detail"]
        wrong = keyed.client.request(method, path, headers={"x-api-key": KEY + "x"})
        assert wrong.status_code == 401, (method, path)
    assert keyed.client.get("/ping").text == "pong"
    assert keyed.client.get("/healthz").json()["status"] == "ok"
    assert keyed.client.get("/").status_code == 200  # the page's shell holds no data; it asks for the key


def test_key_as_header_or_bearer(keyed):
    body = immich_text_request(SHIPPED, "a red circle")
    assert post_predict(keyed.client, body, **{"x-api-key": KEY}).status_code == 200
    assert post_predict(keyed.client, body, authorization=f"Bearer {KEY}").status_code == 200
    assert post_predict(keyed.client, body, authorization=f"Basic {KEY}").status_code == 401
    assert keyed.client.get("/metrics", headers={"authorization": f"Bearer {KEY}"}).status_code == 200


def test_session_cookie_for_the_web_page(keyed):
    with httpx.Client(base_url=keyed.url) as browser:
        assert browser.post("/api/session", json={"api_key": "nope"}).status_code == 401
        assert browser.get("/api/info").status_code == 401
        response = browser.post("/api/session", json={"api_key": KEY})
        assert response.status_code == 204
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/api/info").json()["auth"] is True
        assert browser.delete("/api/session").status_code == 204
        assert browser.get("/api/info").status_code == 401


def test_no_key_configured_means_open_on_loopback():
    with running_server(Settings()) as running:
        routes = [*library_api.router.routes, *embeddings_api.router.routes]
        library_routes = {r.path.replace("{", "").replace("}", "") for r in routes}
        for method, path in protected_routes(running.app):
            if method == "GET":
                answer = running.client.get(path)
                if path in library_routes:  # open, but this server has no library (or embeddings) to answer with
                    assert answer.status_code in (503, 422) and answer.status_code != 401, path
                else:
                    assert answer.status_code == 200, path


def test_trusted_network_needs_no_key_and_forwarded_headers_are_not_believed():
    with running_server(Settings(api_key=KEY, trusted_networks=("127.0.0.0/8",))) as running:
        assert running.client.get("/api/info").status_code == 200
    with running_server(Settings(api_key=KEY, trusted_networks=("10.0.0.0/8",))) as running:
        spoofed = {"x-forwarded-for": "10.1.2.3", "forwarded": "for=10.1.2.3"}
        assert running.client.get("/api/info", headers=spoofed).status_code == 401


def test_loopback_detection_and_bind_refusal():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.9.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.168.1.10")
    check_bind(Settings(host="127.0.0.1"))
    check_bind(Settings(host="0.0.0.0", api_key=KEY))
    with pytest.raises(UnsafeBindError, match="without an API key"):
        check_bind(Settings(host="0.0.0.0"))


def test_cli_refuses_a_public_bind_without_key():
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("XMODAL_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "xmodal", "serve", "--ml-only", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "without an API key" in result.stderr and "Traceback" not in result.stderr


def test_cli_serves_ml_only_with_preload_and_stops_on_sigint():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(SRC), "XMODAL_MODEL_TTL": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "xmodal", "serve", "--ml-only", "--port", str(port), "--preload", SHIPPED],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with httpx.Client(base_url=url) as client:
            models = client.get("/api/models").json()
            assert [m["name"] for m in models["loaded"]] == [SHIPPED] and models["loaded"][0]["pinned"]
            response = post_predict(client, immich_text_request(SHIPPED, "a red circle"))
        want = xmodal.load_model(SHIPPED).embed_texts(["a red circle"])[0]
        assert cosine(clip_vector(response), want) >= 0.9999
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    # A graceful stop, then the CLI's exit code for an interrupt (as uvicorn's own command does).
    assert "Application shutdown complete" in output
    assert process.returncode == 130, output


# -- limits --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def limited():
    with running_server(Settings(preload=(SHIPPED,), max_upload_bytes=64 << 10, max_query_chars=50)) as running:
        yield running


def test_declared_body_over_the_limit_is_413(limited):
    body = immich_image_request(SHIPPED, b"\x00" * (80 << 10))
    response = post_predict(limited.client, body)
    assert response.status_code == 413
    assert "65,536" in response.json()["detail"] and "XMODAL_MAX_UPLOAD_BYTES" in response.json()["detail"]


def test_chunked_body_over_the_limit_is_413(limited):
    content, content_type = immich_image_request(SHIPPED, b"\x00" * (80 << 10))

    def chunks():
        for i in range(0, len(content), 8192):
            yield content[i : i + 8192]

    response = limited.client.post("/predict", content=chunks(), headers={"content-type": content_type})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


def test_body_under_the_limit_passes(limited):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(buf, "PNG")
    assert post_predict(limited.client, immich_image_request(SHIPPED, buf.getvalue())).status_code == 200


def test_query_length_limit(limited):
    assert post_predict(limited.client, immich_text_request(SHIPPED, "x" * 50)).status_code == 200
    response = post_predict(limited.client, immich_text_request(SHIPPED, "x" * 51))
    assert response.status_code == 422 and "XMODAL_MAX_QUERY_CHARS" in response.json()["detail"]


def test_request_timeout_is_504_and_the_server_goes_on():
    data = big_png()
    with running_server(Settings(preload=(SHIPPED,), request_timeout=0.02)) as running:
        response = post_predict(running.client, immich_image_request(SHIPPED, data))
        assert response.status_code == 504
        assert "XMODAL_REQUEST_TIMEOUT" in response.json()["detail"]
        assert running.client.get("/healthz").status_code == 200


# -- CORS, headers, errors -----------------------------------------------------------------
def test_cors_is_off_unless_configured():
    preflight = {"origin": "http://photos.example.org", "access-control-request-method": "POST"}
    with running_server(Settings()) as running:
        response = running.client.options("/predict", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-origin" not in running.client.get("/healthz", headers=preflight).headers
    with running_server(Settings(cors_origins=("http://photos.example.org",))) as running:
        response = running.client.options("/predict", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "http://photos.example.org"
        other = running.client.options("/predict", headers={**preflight, "origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_security_headers_and_page_policy():
    with running_server(Settings()) as running:
        page = running.client.get("/")
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        assert "default-src 'self'" in page.headers["content-security-policy"]


def test_errors_are_json_without_stack_traces(tmp_path):
    broken = tmp_path / "broken-model"
    shutil.copytree(xmodal.models.registry.shipped_models()[SHIPPED], broken)
    (broken / "textual" / "model.onnx").write_bytes(b"not an onnx graph")
    with running_server(Settings()) as running:
        running.app.state.xmodal.models.add_alias(str(broken))
        response = post_predict(running.client, immich_text_request("broken-model", "a cat"))
        assert response.status_code == 500
        assert set(response.json()) == {"detail"}
        assert "Traceback" not in response.text and 'File "' not in response.text
        missing = running.client.get("/no/such/route")
        assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
        # the server still answers, and loads a good model afterwards
        assert post_predict(running.client, immich_text_request(SHIPPED, "a cat")).status_code == 200


def test_bad_settings_are_refused_with_the_variable_name():
    with pytest.raises(InvalidArgumentError, match="XMODAL_TRUSTED_NETWORKS"):
        Settings.from_env({"XMODAL_TRUSTED_NETWORKS": "not-a-network"})
    with pytest.raises(InvalidArgumentError, match="XMODAL_MAX_UPLOAD_BYTES"):
        Settings.from_env({"XMODAL_MAX_UPLOAD_BYTES": "lots"})
    with pytest.raises(InvalidArgumentError, match="--cors-origin"):
        Settings(cors_origins=("https://example.org/path",))
    settings = Settings.from_env(
        {"XMODAL_PRELOAD": "a, b", "XMODAL_CORS_ORIGINS": "https://x.org", "XMODAL_REQUEST_TIMEOUT": "2.5"}
    )
    assert settings.preload == ("a", "b") and settings.cors_origins == ("https://x.org",)
    assert settings.request_timeout == 2.5 and settings.max_upload_bytes == 64 << 20


# -- models, metrics, concurrency ----------------------------------------------------------
def test_model_loads_on_first_use_and_unloads_after_the_ttl():
    with running_server(Settings(model_ttl=0.3)) as running:
        client = running.client
        assert client.get("/api/models").json()["loaded"] == []
        assert post_predict(client, immich_text_request(SHIPPED, "a cat")).status_code == 200
        loaded = client.get("/api/models").json()["loaded"]
        assert [(m["name"], m["towers"], m["pinned"]) for m in loaded] == [(SHIPPED, ["textual"], False)]
        labels = {"model": SHIPPED, "tower": "textual"}
        assert metric(client.get("/metrics").text, "xmodal_model_loaded", **labels) == 1
        deadline = time.monotonic() + 10
        while client.get("/api/models").json()["loaded"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/api/models").json()["loaded"] == []
        assert metric(client.get("/metrics").text, "xmodal_model_loaded", **labels) == 0
        assert post_predict(client, immich_text_request(SHIPPED, "a cat")).status_code == 200
        assert metric(client.get("/metrics").text, "xmodal_model_loads_total", **labels) == 2


def test_preloaded_models_stay_loaded():
    with running_server(Settings(model_ttl=0.1, preload=(SHIPPED,))) as running:
        time.sleep(0.6)
        loaded = running.client.get("/api/models").json()["loaded"]
        assert [(m["name"], m["towers"], m["pinned"]) for m in loaded] == [(SHIPPED, ["textual", "visual"], True)]


def test_metrics_per_route_and_embeddings():
    with running_server(Settings(preload=(SHIPPED,))) as running:
        for _ in range(3):
            post_predict(running.client, immich_text_request(SHIPPED, "a cat"))
        buf = io.BytesIO()
        Image.new("RGB", (20, 20)).save(buf, "PNG")
        post_predict(running.client, immich_image_request(SHIPPED, buf.getvalue()))
        post_predict(running.client, immich_text_request("unknown-model", "a cat"))
        running.client.get("/ping")
        text = running.client.get("/metrics").text
        assert running.client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert metric(text, "xmodal_http_request_duration_seconds_count", method="POST", route="/predict") == 5
    assert metric(text, "xmodal_http_request_duration_seconds_count", method="GET", route="/ping") >= 1
    assert metric(text, "xmodal_http_requests_total", method="POST", route="/predict", status="404") == 1
    assert metric(text, "xmodal_embeddings_total", model=SHIPPED, kind="text") == 3
    assert metric(text, "xmodal_embeddings_total", model=SHIPPED, kind="image") == 1
    assert metric(text, "xmodal_inference_duration_seconds_count", model=SHIPPED, kind="image") == 1


def test_the_event_loop_answers_while_inference_runs():
    """A slow image is decoding on the pool while /api/models answers and reports it in use: the
    event loop is never blocked by inference."""
    data = big_png(6000)
    with running_server(Settings(preload=(SHIPPED,), serve_threads=2)) as running:
        result = {}
        worker = threading.Thread(
            target=lambda: result.update(
                r=post_predict(httpx.Client(base_url=running.url, timeout=120), immich_image_request(SHIPPED, data))
            )
        )
        worker.start()
        seen_in_use = False
        while worker.is_alive() and not seen_in_use:
            models = running.client.get("/api/models", timeout=5).json()["loaded"]
            seen_in_use = any(m["in_use"] for m in models)
        worker.join()
    assert seen_in_use, "no answer arrived while the image was being embedded"
    assert result["r"].status_code == 200


def test_docs_and_openapi_describe_the_predict_contract():
    with running_server(Settings()) as running:
        docs = running.client.get("/docs")
        assert docs.status_code == 200 and "/static/docs/swagger-ui-bundle.js" in docs.text
        assert "cdn" not in docs.text.lower()
        assert running.client.get("/static/docs/swagger-ui-bundle.js").status_code == 200
        schema = running.client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["properties"]) == {"entries", "text", "image"}
    assert {"/ping", "/healthz", "/metrics", "/api/models"} <= set(schema["paths"])
    assert json.dumps(schema).count("x-api-key") >= 1
