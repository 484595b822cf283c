"""Pictures of the documentation, made from the DAVIS frames shipped in tests/data: docs/img/overlay.jpg, an overlay
drawn by vos of DAVIS's annotation, and docs/img/viewer.jpg, the web viewer in headless Chromium (driven by
Playwright, as tests/test_viewer.py does) while vos tracks with random, untrained weights (no trained weights can be
downloaded where the pictures are made).

    python scripts/make_pictures.py [--only overlay|viewer]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.test_viewer: where the viewer tests find Chromium
IMG = REPO / "docs" / "img"
CLIP = REPO / "tests" / "data" / "davis2016-val" / "JPEGImages" / "480p" / "car-shadow"
ANNOTATIONS = REPO / "tests" / "data" / "davis2016-val" / "Annotations" / "480p" / "car-shadow"


def random_model():
    import vos
    from vos.build import save_random_checkpoint

    checkpoint = save_random_checkpoint("edgetam", tempfile.mkdtemp() + "/")
    return vos.load_model("edgetam", checkpoint=checkpoint, image_size=512)


def overlay(frame_index: int = 30) -> Path:
    """The overlay vos draws (`vos render`), here of DAVIS's own annotation of one car-shadow frame."""
    from vos.streams.label_map import read_label_map
    from vos.streams.overlay import draw_overlay

    frame = np.array(Image.open(CLIP / f"{frame_index:05d}.jpg").convert("RGB"))
    annotation = read_label_map(ANNOTATIONS / f"{frame_index:05d}.png")
    labels = (annotation > 0).astype(annotation.dtype)  # DAVIS 2016 marks its one object 255: object 1 here
    picture = draw_overlay(frame, labels, frame_index=frame_index)
    path = IMG / "overlay.jpg"
    Image.fromarray(picture).save(path, quality=70, optimize=True)
    return path


def viewer(model) -> Path:
    """A screenshot of the viewer page while the engine tracks car-shadow."""
    from playwright.async_api import async_playwright

    from tests.test_viewer import CHROMIUM
    from vos.engine import Engine, EngineConfig, StreamSettings
    from vos.viewer import WebSettings

    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} missing: scripts/install-dev.sh installs Debian's chromium")
    stream = StreamSettings(source=str(CLIP), id="car-shadow", prompts=[{"obj_id": 1, "box": [300, 100, 650, 300]}])
    path = IMG / "viewer.jpg"

    async def main() -> None:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1000, "height": 760})
            async with Engine(EngineConfig(streams=[stream], web=WebSettings(port=0)), model) as engine:
                run = asyncio.create_task(engine.run())
                await page.goto(engine.viewer.url)
                await page.wait_for_function("window.vosViewer.pictures >= 3", timeout=120_000)
                await page.screenshot(path=str(path), type="jpeg", quality=70)
                engine.stop()
                await run
            await browser.close()

    asyncio.run(main())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["overlay", "viewer"])
    args = parser.parse_args()
    IMG.mkdir(parents=True, exist_ok=True)
    for name, make in {"overlay": overlay, "viewer": lambda: viewer(random_model())}.items():
        if args.only in (None, name):
            path = make()
            print(f"{path.relative_to(REPO)}: {path.stat().st_size // 1000} KB")


if __name__ == "__main__":
    main()
