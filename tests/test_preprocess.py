"""Preprocessing pixel parity with transformers' image processors, and decoding of odd inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from xmodal.media.image import DecodeOptions, decode_image, load_image, to_rgb
from xmodal.models.config import PreprocessCfg
from xmodal.models.preprocess import ImagePreprocessor

transformers = pytest.importorskip("transformers")
from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil  # noqa: E402

CLIP_CFG = PreprocessCfg(size=224)
SIGLIP_CFG = PreprocessCfg(size=224, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash")


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth random content (like a photo) so resampling differences would show."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 6), max(2, w // 6), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def reference(processor, img: Image.Image) -> np.ndarray:
    return processor(images=[img], return_tensors="np")["pixel_values"][0]


@pytest.mark.parametrize(
    "size", [(224, 224), (37, 91), (301, 199), (640, 480), (480, 640), (1, 1), (3000, 20), (225, 224)]
)
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_pixel_parity_with_transformers(size, kind):
    cfg, proc = (CLIP_CFG, CLIPImageProcessorPil()) if kind == "clip" else (SIGLIP_CFG, SiglipImageProcessorPil())
    img = photo(*size)
    ours = ImagePreprocessor(cfg)(img)
    ref = reference(proc, img)
    assert ours.shape == ref.shape == (3, 224, 224)
    assert np.abs(ours - ref).max() <= 1e-5


def test_exif_rotation_is_applied(tmp_path):
    img = photo(120, 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, quality=95, exif=exif)
    decoded = decode_image(path)
    assert decoded.image.size == (80, 120) and (decoded.width, decoded.height) == (80, 120)
    upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    ours = ImagePreprocessor(CLIP_CFG)(decoded.image)
    assert np.abs(ours - reference(CLIPImageProcessorPil(), upright)).max() <= 1e-5


def _composite_reference(rgba: Image.Image, background=(255, 255, 255)) -> Image.Image:
    arr = np.asarray(rgba.convert("RGBA"), dtype=np.float64)
    alpha = arr[..., 3:] / 255.0
    out = arr[..., :3] * alpha + np.asarray(background, dtype=np.float64) * (1 - alpha)
    return Image.fromarray(np.rint(out).astype(np.uint8))


def test_rgba_is_composited_over_white():
    rng = np.random.default_rng(1)
    rgba = Image.fromarray(rng.integers(0, 256, (90, 130, 4), dtype=np.uint8), "RGBA")
    ours = np.asarray(to_rgb(rgba), dtype=np.int16)
    ref = np.asarray(_composite_reference(rgba), dtype=np.int16)
    assert np.abs(ours - ref).max() <= 1  # Pillow's alpha_composite rounds with integer math
    transparent = Image.new("RGBA", (4, 4), (10, 200, 30, 0))
    assert np.asarray(to_rgb(transparent)).tolist() == [[[255, 255, 255]] * 4] * 4
    assert np.asarray(to_rgb(transparent, background=(0, 0, 0))).max() == 0


def test_palette_with_transparency_and_la():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.info["transparency"] = 0
    rgb = np.asarray(to_rgb(pal))
    assert rgb[0, 0].tolist() == [0, 0, 255] and rgb[1, 1].tolist() == [255, 255, 255]
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert np.asarray(load_image(buf.getvalue()))[1, 1].tolist() == [255, 255, 255]
    la = Image.new("LA", (2, 2), (100, 0))
    assert np.asarray(to_rgb(la))[0, 0].tolist() == [255, 255, 255]


def test_grayscale_and_16_bit(tmp_path):
    gray = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L")
    assert np.asarray(to_rgb(gray))[0, 5].tolist() == [5, 5, 5]
    values = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    rgb = np.asarray(load_image(path))
    expected = np.rint(values / 257.0).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], expected) and rgb[..., 0].max() == 255 and rgb[..., 0].min() == 0
    # Pillow's own conversion would clip: nearly everything white.
    assert np.mean(np.asarray(Image.open(path).convert("RGB"))[..., 0] == 255) > 0.9


def test_cmyk_jpeg_decodes_to_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    rgb = np.asarray(load_image(path)).astype(int)
    assert rgb.shape == (10, 20, 3)
    assert rgb[5, 5, 0] > 200 and rgb[5, 5, 1] < 60 and rgb[5, 5, 2] < 60


def test_arrays_and_animated_gif(tmp_path):
    arr = np.full((5, 7, 3), 42, np.uint8)
    assert np.asarray(load_image(arr)).tolist() == arr.tolist()
    assert load_image(np.zeros((5, 7), np.uint8)).mode == "RGB"
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 255, 0)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    assert np.asarray(load_image(path))[0, 0].tolist()[0] > 200  # the first frame (red)


def test_longest_resize_pads_with_fill_color():
    cfg = PreprocessCfg(size=10, mean=(0, 0, 0), std=(1, 1, 1), resize_mode="longest", fill_color=0)
    out = ImagePreprocessor(cfg)(Image.new("RGB", (40, 20), (255, 255, 255)))
    # 40x20 -> 10x5 pasted at top (10-5)//2 = 2: rows 2..6 white, the rest fill colour 0.
    rows = out[0].mean(axis=1)
    assert rows.tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0, 0]


def test_jpeg_draft_decodes_large_photos_smaller_but_close(tmp_path):
    path = tmp_path / "big.jpg"
    photo(2400, 1600).save(path, quality=92)
    full = decode_image(path)
    draft = decode_image(path, DecodeOptions(draft_size=448))
    assert full.image.size == (2400, 1600)
    assert min(draft.image.size) >= 448 and draft.image.size[0] < 2400
    assert (draft.width, draft.height) == (2400, 1600)  # the file's own size is reported
    pre = ImagePreprocessor(CLIP_CFG)
    assert np.abs(pre(draft.image) - pre(full.image)).mean() < 0.02
