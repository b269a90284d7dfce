"""The server's model cache on its own: one load per model however many requests race for it,
idle eviction by the clock, pinned and in-use models kept, names resolved safely."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import xmodal
from xmodal.errors import ModelNotFoundError
from xmodal.models.registry import shipped_models
from xmodal.serve.model_cache import ModelCache, clean_name

SHIPPED = "xmodal-tiny-shapes"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loads():
    return []


@pytest.fixture
def cache(loads):
    clock = Clock()
    changes = []

    def loader(source):
        loads.append(source)
        return xmodal.load_model(source)

    cache = ModelCache(60, loader=loader, clock=clock, on_change=lambda *c: changes.append(c))
    cache.clock, cache.changes = clock, changes
    return cache


def test_clean_name_is_immichs():
    assert clean_name("immich-app/ViT-B-32__openai") == "ViT-B-32__openai"
    assert clean_name("nllb-clip-base-siglip__v1") == "nllb-clip-base-siglip__v1"
    assert clean_name("a:b\\c.d") == "a_b_cd"
    assert clean_name("../../etc/passwd") == "passwd"


def test_racing_first_requests_load_once(cache, loads):
    barrier = threading.Barrier(6)

    def embed(_):
        barrier.wait()
        with cache.use(SHIPPED, "textual") as model:
            return model.embed_texts(["a red circle"])[0]

    with ThreadPoolExecutor(6) as pool:
        vectors = list(pool.map(embed, range(6)))
    assert loads == [SHIPPED]
    assert all((v == vectors[0]).all() for v in vectors)
    assert cache.changes == [(SHIPPED, "textual", True)]


def test_idle_models_are_evicted_after_the_ttl_not_before(cache, loads):
    with cache.use(SHIPPED, "visual"):
        pass
    cache.clock.now += 59
    assert cache.evict_idle() == []
    cache.clock.now += 2
    assert cache.evict_idle() == [SHIPPED]
    assert cache.states() == []
    assert cache.changes[-1] == (SHIPPED, "visual", False)
    with cache.use(SHIPPED, "visual"):
        pass
    assert loads == [SHIPPED, SHIPPED]


def test_models_in_use_and_pinned_models_stay(cache):
    with cache.use(SHIPPED, "textual"):
        cache.clock.now += 1000
        assert cache.evict_idle() == []
        assert cache.states()[0].in_use == 1
    cache.clock.now += 1000
    assert cache.evict_idle() == [SHIPPED]
    assert cache.preload(SHIPPED) == SHIPPED
    cache.clock.now += 10_000
    assert cache.evict_idle() == []
    state = cache.states()[0]
    assert state.pinned and state.towers == ["textual", "visual"]


def test_ttl_zero_keeps_models_forever(loads):
    clock = Clock()
    cache = ModelCache(0, loader=xmodal.load_model, clock=clock)
    with cache.use(SHIPPED, "textual"):
        pass
    clock.now += 1e9
    assert cache.evict_idle() == [] and len(cache.states()) == 1


def test_only_known_and_preloaded_names_resolve(cache, tmp_path):
    folder = tmp_path / "my-model"
    shutil.copytree(shipped_models()[SHIPPED], folder)
    assert cache.resolve(SHIPPED) == SHIPPED
    with pytest.raises(ModelNotFoundError, match="not served here"):
        cache.resolve(str(folder))  # a path from a client is only its last segment: unknown
    assert cache.add_alias(str(folder)) == folder.name
    assert cache.resolve(folder.name) == str(folder)
    assert cache.resolve(f"immich-app/{folder.name}") == str(folder)


def test_a_failed_load_is_retried_next_time(loads):
    attempts = []

    def flaky(source):
        attempts.append(source)
        if len(attempts) == 1:
            raise ModelNotFoundError("hub not reachable")
        return xmodal.load_model(source)

    cache = ModelCache(60, loader=flaky)
    with pytest.raises(ModelNotFoundError):
        with cache.use(SHIPPED, "textual"):
            pass
    assert cache.states() == []
    with cache.use(SHIPPED, "textual") as model:
        assert model.dim > 0
    assert len(attempts) == 2
