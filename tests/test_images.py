"""Reading user images: formats, modes, sizes, folders and patterns; each bad input one clear line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmcam.cli import main
from mmcam.images import MAX_SIDE, ORIGINAL_SIZE, image_paths, load_image


def noise(height: int, width: int, channels: int = 3) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return (np.random.default_rng(height * width).random(shape) * 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.webp", "a.bmp", "a.tiff", "a.gif"])
def test_common_formats_load_as_rgb_of_their_size(tmp_path, name):
    Image.fromarray(noise(30, 50)).save(tmp_path / name)
    image = load_image(tmp_path / name)
    assert image.mode == "RGB" and image.size == (50, 30)


def test_grayscale_sixteen_bit_and_float_images_use_the_full_range(tmp_path):
    Image.fromarray(noise(20, 30, 1)).save(tmp_path / "gray.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "gray.png"))[..., 0], noise(20, 30, 1))
    deep = (np.arange(20 * 30).reshape(20, 30) * 7 + 1000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    pixels = np.asarray(load_image(tmp_path / "deep.png"))
    assert pixels.min() == 0 and pixels.max() == 255 and len(np.unique(pixels)) > 200
    Image.fromarray(np.linspace(-1, 1, 600, dtype=np.float32).reshape(20, 30)).save(tmp_path / "float.tiff")
    pixels = np.asarray(load_image(tmp_path / "float.tiff"))
    assert pixels.min() == 0 and pixels.max() == 255


def test_transparent_images_are_composed_over_white(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[:, :6] = (255, 0, 0, 255)  # left half opaque red, right half fully transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    pixels = np.asarray(load_image(tmp_path / "rgba.png"))
    assert (pixels[:, :6] == (255, 0, 0)).all() and (pixels[:, 6:] == 255).all()
    Image.fromarray(rgba).convert("P").save(tmp_path / "palette.gif", transparency=0)
    assert load_image(tmp_path / "palette.gif").mode == "RGB"


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(noise(20, 40))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "phone.jpg", exif=exif)
    assert load_image(tmp_path / "phone.jpg").size == (20, 40)
    reduced = load_image(tmp_path / "phone.jpg", max_side=10)
    assert reduced.size == (5, 10) and reduced.info[ORIGINAL_SIZE] == (20, 40)  # the upright file's size


def test_huge_images_are_reduced_and_bombs_are_one_clear_error(tmp_path, monkeypatch):
    Image.new("RGB", (MAX_SIDE * 2, 300), "white").save(tmp_path / "wide.png")
    wide = load_image(tmp_path / "wide.png")
    assert wide.size == (MAX_SIDE, 150) and wide.info[ORIGINAL_SIZE] == (MAX_SIDE * 2, 300)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # so that a small file stands for a huge one
    Image.new("RGB", (100, 100)).save(tmp_path / "bomb.png")
    with pytest.raises(ValueError, match="bomb.png: too large"):
        load_image(tmp_path / "bomb.png")


def test_folders_and_patterns_name_their_images_sorted(tmp_path):
    for name in ("b.png", "a.jpg", "c.webp", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    assert image_paths([str(tmp_path)]) == [str(tmp_path / n) for n in ("a.jpg", "b.png", "c.webp")]
    assert image_paths([str(tmp_path / "*.png"), "x.png"]) == [str(tmp_path / "b.png"), "x.png"]
    with pytest.raises(ValueError, match="a folder with no image files"):
        load_image(image_paths([str(tmp_path / "empty")])[0])
    with pytest.raises(ValueError, match="no file matches this pattern"):
        load_image(image_paths([str(tmp_path / "*.jpeg")])[0])


def test_a_mixed_batch_explains_the_good_images_and_says_one_line_per_bad_one(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(noise(60, 90)).save(folder / "photo.jpg")
    Image.fromarray(noise(70, 40, 4)).save(folder / "cutout.png")
    Image.fromarray(noise(50, 50, 1)).save(folder / "gray.webp")
    (folder / "broken.png").write_text("not an image")
    arguments = [str(folder), str(tmp_path / "missing.png"), str(tmp_path / "*.tif")]
    code = main(["classify", *arguments, "--top", "1", "-o", str(tmp_path / "out"), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [(r["image"].split("/")[-1], r["size"]) for r in records] == [
        ("cutout.png", [70, 40]),
        ("gray.webp", [50, 50]),
        ("photo.jpg", [60, 90]),
    ]
    skipped = [line for line in captured.err.splitlines() if line.startswith("mmcam: skipped")]
    assert len(skipped) == 3
    assert "broken.png: not an image file" in skipped[0]
    assert "missing.png: no such file" in skipped[1] and "no file matches this pattern" in skipped[2]
    assert "report: open" in captured.err and (tmp_path / "out" / "report.html").is_file()


def test_a_reduced_image_is_announced_and_its_peaks_are_in_the_files_pixels(tmp_path, capsys):
    """A file over MAX_SIDE is explained reduced; stderr says so, and ``size`` and ``peak`` are in the
    file's pixels: the peak of the same picture saved at the explained size, scaled up by the reduction."""
    bright = np.zeros((40, MAX_SIDE + MAX_SIDE // 4, 3), dtype=np.uint8)
    bright[:, -600:] = noise(40, 600)  # the only structure, at the right end
    Image.fromarray(bright).save(tmp_path / "wide.png")
    load_image(tmp_path / "wide.png").save(tmp_path / "small.png")
    options = ["--model", "torchvision:resnet18:random", "--top", "1", "--json", "-o"]
    torch.manual_seed(0)  # the same random weights for both runs
    assert main(["classify", str(tmp_path / "wide.png"), *options, str(tmp_path / "wide")]) == 0
    captured = capsys.readouterr()
    wide = json.loads(captured.out)
    assert wide["size"] == [40, MAX_SIDE + MAX_SIDE // 4] and wide["explained_size"] == [32, MAX_SIDE]
    assert "explained at 4096x32" in captured.err and wide["notes"]
    torch.manual_seed(0)
    assert main(["classify", str(tmp_path / "small.png"), *options, str(tmp_path / "small")]) == 0
    small = json.loads(capsys.readouterr().out)
    assert "explained_size" not in small and "notes" not in small
    scale = wide["size"][1] / small["size"][1]
    (x, y), (x_small, y_small) = wide["targets"][0]["peak"], small["targets"][0]["peak"]
    assert abs(x - x_small * scale) <= 2 * scale and abs(y - y_small * scale) <= 2 * scale


def test_an_animated_gif_is_read_at_its_first_frame_and_says_so(tmp_path, capsys):
    """An animated GIF is explained at its first frame: the record and stderr say so, once; a still GIF
    says nothing."""
    frames = [Image.new("RGB", (48, 48), color) for color in ((200, 30, 30), (30, 30, 200), (30, 200, 30))]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(tmp_path / "still.gif")
    first = load_image(tmp_path / "moving.gif")
    assert (
        np.asarray(first)[24, 24].tolist() == np.asarray(load_image(tmp_path / "still.gif"))[24, 24].tolist()
    )
    options = ["--model", "shapes", "--top", "1", "--json", "--no-figures"]
    assert main(["classify", str(tmp_path / "moving.gif"), *options, "-o", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    said = "the file is animated (3 frames); its first frame was explained"
    assert [note for note in record["notes"] if said in note] and captured.err.count(said) == 1
    assert main(["classify", str(tmp_path / "still.gif"), *options, "-o", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    assert "the file is animated" not in captured.out + captured.err
