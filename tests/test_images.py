"""Reading images of every common kind, and refusing bad ones with one clear line."""

import numpy as np
import pytest
from PIL import Image

from zsseg import ZssegError
from zsseg.data.images import as_rgb_array, read_image


def _check(path, expected_shape):
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == expected_shape
    return image


def test_sixteen_bit_grayscale(tmp_path):
    data = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100)
    Image.fromarray(data).save(tmp_path / "a.png")
    image = _check(tmp_path / "a.png", (20, 30, 3))
    assert image[-1, -1, 0] == round(data[-1, -1] / 257) and image[0, 0, 0] == 0


def test_grayscale_palette_rgba_cmyk(tmp_path):
    gray = Image.fromarray(np.full((10, 12), 77, np.uint8))
    gray.save(tmp_path / "g.png")
    assert (_check(tmp_path / "g.png", (10, 12, 3)) == 77).all()
    gray.convert("P").save(tmp_path / "p.png")
    _check(tmp_path / "p.png", (10, 12, 3))
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 6:, 3] = 255  # left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    image = _check(tmp_path / "t.png", (10, 12, 3))
    assert (image[:, :6] == 255).all() and (image[:, 6:] == [200, 0, 0]).all()
    Image.new("CMYK", (12, 10), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    image = _check(tmp_path / "c.jpg", (10, 12, 3))
    assert image[..., 0].mean() > 200 and image[..., 1].mean() < 60


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :5] = 255  # white on the left
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    upright = _check(tmp_path / "r.jpg", (20, 10, 3))
    assert upright[:5].mean() > 200 and upright[-5:].mean() < 50  # white is now on top


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    Image.new("L", (4000, 3000)).save(tmp_path / "big.png")
    with pytest.raises(ZssegError, match="above the limit"):
        read_image(tmp_path / "big.png", max_pixels=1_000_000)


def test_bad_files(tmp_path):
    with pytest.raises(ZssegError, match="not found"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ZssegError, match="not an image"):
        read_image(tmp_path / "notes.jpg")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:200])
    with pytest.raises(ZssegError, match="corrupt or truncated"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(ZssegError, match="folder"):
        read_image(tmp_path)


def test_arrays():
    assert as_rgb_array(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    with pytest.raises(ZssegError, match="uint8"):
        as_rgb_array(np.zeros((4, 5, 3), np.float32))
    with pytest.raises(ZssegError, match="shape"):
        as_rgb_array(np.zeros((4, 5, 2), np.uint8))
