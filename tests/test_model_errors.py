"""Bad model folders and bad images raise clear xmodal errors naming the file and the reason."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import xmodal
from xmodal.errors import ImageTooLargeError, MediaError, ModelFormatError, ModelNotFoundError
from xmodal.media.image import DecodeOptions, decode_image


@pytest.fixture
def model_copy(clip_model_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(clip_model_dir, dst)
    return dst


def test_missing_onnx_file(model_copy):
    (model_copy / "visual" / "model.onnx").unlink()
    with pytest.raises(ModelFormatError, match=r"visual/model\.onnx: missing file"):
        xmodal.load_model(model_copy)


def test_corrupt_onnx_file(model_copy):
    (model_copy / "textual" / "model.onnx").write_bytes(b"\x08\x07garbage" * 100)
    enc = xmodal.load_model(model_copy)  # sessions open lazily: images still work
    assert enc.embed_images([np.zeros((8, 8, 3), np.uint8)]).shape == (1, enc.dim)
    with pytest.raises(ModelFormatError, match=r"textual/model\.onnx: not a loadable ONNX model"):
        enc.embed_texts(["a dog"])


def test_empty_onnx_file(model_copy):
    (model_copy / "visual" / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty file"):
        xmodal.load_model(model_copy).embed_images([np.zeros((8, 8, 3), np.uint8)])


def test_missing_tokenizer(model_copy):
    (model_copy / "textual" / "tokenizer.json").unlink()
    with pytest.raises(ModelFormatError, match=r"textual/tokenizer\.json: missing file"):
        xmodal.load_model(model_copy)


def test_bad_configs(model_copy):
    (model_copy / "visual" / "preprocess_cfg.json").write_text(json.dumps({"size": 224, "resize_mode": "zoom"}))
    with pytest.raises(ModelFormatError, match="resize_mode 'zoom'; expected one of shortest, squash, longest"):
        xmodal.load_model(model_copy)
    (model_copy / "config.json").write_text("{")
    with pytest.raises(ModelFormatError, match=r"config\.json: invalid JSON"):
        xmodal.load_model(model_copy)
    (model_copy / "config.json").unlink()
    with pytest.raises(ModelFormatError, match=r"config\.json: missing file"):
        xmodal.load_model(model_copy)


def test_missing_folder_and_unknown_name(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        xmodal.load_model(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match="did you mean ViT-B-32__openai"):
        xmodal.load_model("ViT-B-32__openia")


# -- images ------------------------------------------------------------------------------


def _bad_images(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(good, quality=90)
    data = good.read_bytes()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    return good


@pytest.mark.parametrize(
    "name,reason",
    [
        ("empty.jpg", "empty file (0 bytes)"),
        ("truncated.jpg", "corrupt or truncated image"),
        ("text.jpg", "not a recognized image format"),
        ("missing.jpg", "file not found"),
    ],
)
def test_bad_image_files(tmp_path, name, reason):
    _bad_images(tmp_path)
    with pytest.raises(MediaError) as info:
        decode_image(tmp_path / name)
    assert str(info.value).startswith(f"{tmp_path / name}: {reason}")


def test_directory_and_broken_symlink(tmp_path):
    with pytest.raises(MediaError, match="is a directory"):
        decode_image(tmp_path)
    link = tmp_path / "dangling.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(MediaError, match="broken symbolic link"):
        decode_image(link)


def test_decompression_bomb_limit_is_configurable(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 MP, a few kB on disk
    with pytest.raises(ImageTooLargeError, match="bomb.png"):
        decode_image(path)
    small = tmp_path / "two_mp.png"
    Image.new("RGB", (2000, 1000)).save(small)
    assert decode_image(small).width == 2000
    with pytest.raises(
        ImageTooLargeError, match=r"2000x1000 = 2,000,000 pixels exceeds the limit of 1,000,000 \(max_pixels\)"
    ):
        decode_image(small, DecodeOptions(max_pixels=1_000_000))


def test_embed_images_skip_reports_bad_item_and_embeds_the_rest(clip_model_dir, tmp_path):
    good = _bad_images(tmp_path)
    enc = xmodal.load_model(clip_model_dir)
    items = [good, tmp_path / "truncated.jpg", np.full((30, 40, 3), 7, np.uint8), tmp_path / "text.jpg"]
    with pytest.raises(MediaError, match="truncated.jpg"):
        enc.embed_images(items)
    failures = []
    out = enc.embed_images(items, on_error=lambda i, item, err: failures.append((i, err.reason)))
    assert [i for i, _ in failures] == [1, 3]
    assert "corrupt or truncated image" in failures[0][1] and "not a recognized image format" in failures[1][1]
    assert np.isnan(out[[1, 3]]).all() and not np.isnan(out[[0, 2]]).any()
    alone = enc.embed_images([good, items[2]])
    np.testing.assert_allclose(out[[0, 2]], alone, atol=1e-6)
    skipped = enc.embed_images(items, on_error="skip")
    np.testing.assert_array_equal(np.isnan(skipped[:, 0]), [False, True, False, True])


def test_invalid_arguments(clip_model_dir):
    enc = xmodal.load_model(clip_model_dir)
    with pytest.raises(ValueError, match="on_error"):
        enc.embed_images([], on_error="ignore")
    with pytest.raises(ValueError, match="long_text 'split'"):
        enc.embed_texts(["a"], long_text="split")
    with pytest.raises(ValueError, match="precision 'fp8'"):
        xmodal.load_model(clip_model_dir, precision="fp8").embed_texts(["a"])
