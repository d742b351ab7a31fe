"""Make the README's gallery: run mmcam's commands on the bundled models and photograph one view of
each HTML report in headless Chromium (Debian: apt-get install chromium chromium-driver).

    python docs/make_gallery.py          # writes docs/gallery-{classify,caption,vqa,rl}.png
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image

from mmcam.cli import main
from mmcam.zoo import make_scenes

DOCS = Path(__file__).resolve().parent


def classify_report(folder: Path) -> Path:
    """The bundled classifier with textual explanations, on one shapes scene."""
    scene = folder / "scene.png"
    Image.fromarray(make_scenes(1, seed=11, n_objects=(3, 3))[0].image).save(scene)
    out = folder / "classify"
    main(["classify", str(scene), "--concepts", "--layer", "features.block5", "-o", str(out), "--overwrite"])
    return out / "report.html"


def caption_report(folder: Path) -> Path:
    """The bundled captioner: a map per word of its caption of one shapes scene."""
    scene = folder / "caption-scene.png"
    Image.fromarray(make_scenes(1, seed=12, n_objects=(2, 2))[0].image).save(scene)
    out = folder / "caption"
    main(["caption", str(scene), "-o", str(out), "--overwrite"])
    return out / "report.html"


def vqa_report(folder: Path) -> Path:
    """The bundled VQA model: its answer, the two best answers and why not another color."""
    scene = make_scenes(1, seed=13, n_objects=(3, 3))[0]
    question = next(q for q in scene.questions if q.type in ("color", "size"))
    other = next(o.color for o in scene.objects if o.color != scene.objects[question.objects[0]].color)
    path = folder / "vqa-scene.png"
    Image.fromarray(scene.image).save(path)
    out = folder / "vqa"
    main(["vqa", str(path), "-q", question.text, "--top", "2", "--why-not", other, "-o", str(out), "--overwrite"])
    return out / "report.html"


def rl_report(folder: Path) -> Path:
    """The strong bundled ShapesReach agent, one episode with its value."""
    out = folder / "rl"
    main(["rl", "--policy", "strong", "--episodes", "1", "--seed", "0", "--value", "-o", str(out), "--overwrite"])
    return out / "report.html"


def photograph(report: Path, path: Path, script: str = "") -> None:
    """Save the report's first view, after running ``script`` in the page, as a 256-color PNG."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=760,1400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(report.resolve().as_uri())
        if script:
            driver.execute_script(script)
        picture = Image.open(io.BytesIO(driver.find_element("css selector", ".view").screenshot_as_png))
    finally:
        driver.quit()
    picture.convert("RGB").quantize(256).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KiB")


def run() -> int:
    with tempfile.TemporaryDirectory() as folder:
        photograph(classify_report(Path(folder)), DOCS / "gallery-classify.png")
        photograph(caption_report(Path(folder)), DOCS / "gallery-caption.png")
        photograph(vqa_report(Path(folder)), DOCS / "gallery-vqa.png")
        step = "const s = document.querySelector('.scrubber'); s.value = 4;"
        step += "s.dispatchEvent(new Event('input'));"
        photograph(rl_report(Path(folder)), DOCS / "gallery-rl.png", step)
    return 0


if __name__ == "__main__":
    sys.exit(run())
