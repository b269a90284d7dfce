"""Exported models embed exactly like the transformers reference (processor + model in torch)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import xmodal

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def sample_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(224, 224), (300, 180), (131, 257), (640, 480)]
    images = []
    for w, h in sizes:
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        images.append(Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR))
    return images


TEXTS = ["a dog on a beach", "two cats sleeping on a red sofa", "a small red circle at the top left"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def reference_images(checkpoint, processor_cls, images) -> np.ndarray:
    model = transformers.AutoModel.from_pretrained(checkpoint).eval()
    pixels = processor_cls.from_pretrained(checkpoint)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    return getattr(out, "pooler_output", out).numpy()


def reference_texts(checkpoint, texts, max_length, with_mask=False) -> np.ndarray:
    model = transformers.AutoModel.from_pretrained(checkpoint).eval()
    tok = transformers.AutoTokenizer.from_pretrained(checkpoint)
    enc = tok(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    kwargs = {"attention_mask": enc["attention_mask"]} if with_mask else {}
    with torch.no_grad():
        out = model.get_text_features(input_ids=enc["input_ids"], **kwargs)
    return getattr(out, "pooler_output", out).numpy()


def torch_reference(checkpoint, image_processor_cls, text_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The transformers model's embeddings of sample_images() and TEXTS."""
    images = reference_images(checkpoint, image_processor_cls, sample_images())
    return images, reference_texts(checkpoint, TEXTS, text_length)


def assert_matches_torch(enc, reference: tuple[np.ndarray, np.ndarray], min_cos: float) -> None:
    """enc's image and text embeddings are unit rows within `min_cos` of the reference's."""
    got = enc.embed_images(sample_images(), batch_size=3)
    assert got.dtype == np.float32 and got.shape == (4, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosines(got, reference[0]).min() >= min_cos
    assert cosines(enc.embed_texts(TEXTS), reference[1]).min() >= min_cos


@pytest.fixture(scope="module")
def vitb32_reference(vitb32_checkpoint) -> tuple[np.ndarray, np.ndarray]:
    from transformers import CLIPImageProcessorPil

    return torch_reference(vitb32_checkpoint, CLIPImageProcessorPil, 77)


@pytest.fixture(scope="module")
def clip_reference(clip_checkpoint) -> tuple[np.ndarray, np.ndarray]:
    from transformers import CLIPImageProcessorPil

    return torch_reference(clip_checkpoint, CLIPImageProcessorPil, 77)


@pytest.mark.slow
@pytest.mark.parametrize("precision,min_cos", [("fp32", 0.9999), ("bf16", 0.999)])
def test_vitb32_geometry_matches_torch(vitb32_reference, vitb32_model_dir, precision, min_cos):
    if precision == "bf16":
        pytest.importorskip("openvino", reason="bf16 runs on OpenVINO (pip install 'xmodal[openvino]')")
    enc = xmodal.load_model(vitb32_model_dir, precision=precision)
    assert enc.dim == 512 and enc.image_size == 224
    assert_matches_torch(enc, vitb32_reference, min_cos)


@pytest.mark.slow
def test_vitb32_geometry_int8_matches_torch_on_each_cpu_kind(vitb32_reference, vitb32_model_dir, int8_cpu):
    """int8 stays >= 0.99 with the recipe picked for this CPU and for one without VNNI (7-bit)."""
    from xmodal.models.quantize import quantized_copy

    enc = xmodal.load_model(vitb32_model_dir, precision="int8")
    assert_matches_torch(enc, vitb32_reference, 0.99)
    for tower, path in (("visual", enc.config.visual_path), ("textual", enc.config.textual_path)):
        assert enc.session(tower).path == quantized_copy(path, reduce_range=int8_cpu.saturates)


def test_clip_small_matches_torch(clip_reference, clip_model_dir):
    assert_matches_torch(xmodal.load_model(clip_model_dir), clip_reference, 0.9999)


def test_clip_small_int8_matches_torch_on_each_cpu_kind(clip_reference, clip_model_dir, int8_cpu):
    """The small CLIP's text tower is where 8-bit weights fell to 0.972 on AVX2-only CPUs."""
    from xmodal.models.quantize import quantized_copy

    enc = xmodal.load_model(clip_model_dir, precision="int8")
    assert_matches_torch(enc, clip_reference, 0.99)
    assert enc.session("textual").path == quantized_copy(enc.config.textual_path, reduce_range=int8_cpu.saturates)


def test_siglip_squash_resize_and_own_tokenizer(siglip_checkpoint, siglip_model_dir):
    from transformers import SiglipImageProcessorPil

    enc = xmodal.load_model(siglip_model_dir)
    assert enc.config.preprocess.resize_mode == "squash"
    assert enc.config.text.clean == "canonicalize" and enc.config.text.context_length == 16
    images = sample_images()
    assert (
        cosines(enc.embed_images(images), reference_images(siglip_checkpoint, SiglipImageProcessorPil, images)).min()
        >= 0.9999
    )
    # Canonical text (lower case, no punctuation) so the reference needs no cleaning of its own.
    assert cosines(enc.embed_texts(TEXTS), reference_texts(siglip_checkpoint, TEXTS, 16)).min() >= 0.9999


def test_chinese_clip_uses_attention_mask(chinese_clip_checkpoint, chinese_clip_model_dir):
    from transformers import ChineseCLIPImageProcessorPil

    enc = xmodal.load_model(chinese_clip_model_dir)
    assert enc.config.text.context_length == 52
    images = sample_images()
    ref = reference_images(chinese_clip_checkpoint, ChineseCLIPImageProcessorPil, images)
    assert cosines(enc.embed_images(images), ref).min() >= 0.9999
    texts = ["一只狗在海滩上奔跑", "两只猫 on a red sofa", "我爱北京天安门!"]
    assert (
        cosines(enc.embed_texts(texts), reference_texts(chinese_clip_checkpoint, texts, 52, with_mask=True)).min()
        >= 0.9999
    )


def test_outputs_are_batched_and_deterministic(clip_model_dir):
    enc = xmodal.load_model(clip_model_dir)
    images = sample_images()
    one_by_one = np.concatenate([enc.embed_images([im]) for im in images])
    batched = enc.embed_images(images, batch_size=4)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_array_equal(enc.embed_images(images, batch_size=4), batched)
    assert enc.embed_texts([]).shape == (0, enc.dim)


def test_int8_export_is_close_to_fp32(clip_checkpoint, tmp_path):
    from xmodal.models.export import export_hf_checkpoint

    fp32 = xmodal.load_model(export_hf_checkpoint(clip_checkpoint, tmp_path / "fp32"))
    int8 = xmodal.load_model(export_hf_checkpoint(clip_checkpoint, tmp_path / "int8", int8=True))
    assert int8.config.raw["xmodal"]["precision"] == "int8"
    assert (tmp_path / "int8" / "visual" / "model.onnx").stat().st_size < (
        tmp_path / "fp32" / "visual" / "model.onnx"
    ).stat().st_size
    images = sample_images()
    assert cosines(int8.embed_images(images), fp32.embed_images(images)).min() >= 0.99
    assert cosines(int8.embed_texts(TEXTS), fp32.embed_texts(TEXTS)).min() >= 0.99


def test_fp16_export_keeps_float32_io(clip_checkpoint, tmp_path):
    from xmodal.models.export import export_hf_checkpoint

    fp32 = xmodal.load_model(export_hf_checkpoint(clip_checkpoint, tmp_path / "fp32"))
    fp16 = xmodal.load_model(export_hf_checkpoint(clip_checkpoint, tmp_path / "fp16", fp16=True))
    images = sample_images()
    out = fp16.embed_images(images)
    assert out.dtype == np.float32
    assert cosines(out, fp32.embed_images(images)).min() >= 0.999


def test_runtime_imports_no_torch(clip_model_dir):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, xmodal\n"
        f"e = xmodal.load_model({str(clip_model_dir)!r})\n"
        "e.embed_texts(['a dog']); e.embed_images([np.zeros((32, 48, 3), np.uint8)])\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_batch_one_graphs_are_looped(clip_model_dir, tmp_path):
    """Immich exports have a fixed batch of 1; batches are run item by item, same results."""
    import shutil

    import onnx
    from onnx.tools import update_model_dims

    folder = tmp_path / "batch1"
    shutil.copytree(clip_model_dir, folder)
    for tower, name in (("visual", "image"), ("textual", "text")):
        path = folder / tower / "model.onnx"
        model = onnx.load(str(path))
        dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
        out_dims = [d.dim_value or d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim]
        model = update_model_dims.update_inputs_outputs_dims(
            model, {name: [1, *dims[1:]]}, {"embedding": [1, *out_dims[1:]]}
        )
        onnx.save(model, str(path))
    fixed, dynamic = xmodal.load_model(folder), xmodal.load_model(clip_model_dir)
    images = sample_images()
    np.testing.assert_allclose(
        fixed.embed_images(images, batch_size=4), dynamic.embed_images(images, batch_size=4), atol=1e-5
    )
    np.testing.assert_allclose(fixed.embed_texts(TEXTS), dynamic.embed_texts(TEXTS), atol=1e-5)


def test_long_text_window_mode(clip_model_dir):
    enc = xmodal.load_model(clip_model_dir)
    long_text = " ".join(["a red circle next to a blue square on a sunny beach"] * 20)
    truncated = enc.embed_texts([long_text])
    windowed = enc.embed_texts([long_text], long_text="window")
    assert windowed.shape == (1, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(windowed), 1.0, atol=1e-5)
    windows = enc.tokenizer.encode_windows(long_text)
    expected = enc.embed_tokens(windows).mean(axis=0)
    np.testing.assert_allclose(windowed[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert not np.allclose(windowed, truncated, atol=1e-4)
    np.testing.assert_allclose(enc.embed_texts(["short"], long_text="window"), enc.embed_texts(["short"]), atol=1e-6)
