"""The live web viewer: its HTTP API without a model, then the page in a real Chromium against a running engine."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import cv2
import numpy as np
import pytest

from tests.conftest import read_frame
from tests.mqtt_broker import free_port
from vos.engine.stream import StreamReport, StreamStats
from vos.streams.messages import MaskMessage, ObjectMask
from vos.streams.overlay import object_colour
from vos.streams.prompt_inbox import MAX_PENDING_PROMPTS, MAX_PROMPT_BYTES, PromptInbox
from vos.streams.sources.base import Frame
from vos.viewer import WebSettings
from vos.viewer.server import WebViewer

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("VOS_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


def fake_runner(stream: str = "cam") -> SimpleNamespace:
    """What the viewer reads of a `StreamRunner`: its id, stats, report (latencies) and prompt inbox."""
    inbox = PromptInbox(stream)
    stats = lambda: StreamStats(stream, state="online", pending_prompts=len(inbox), refused_prompts=inbox.refused)  # noqa: E731
    return SimpleNamespace(stream=stream, stats=stats, report=StreamReport(stream), inbox=inbox, recent_fps=0.0)


def frame_and_masks(image: np.ndarray, index: int = 0):
    """Object 1 in the left half's top, object 2 a box lower right: (Frame, MaskMessage, labels)."""
    h, w = image.shape[:2]
    labels = np.zeros((h, w), np.uint8)
    labels[: h // 3, : w // 2] = 1
    labels[h // 2 :, 2 * w // 3 :] = 2
    objects = [ObjectMask.from_mask(i, labels == i, 2.0) for i in (1, 2)]
    message = MaskMessage(stream="cam", frame_index=index, pts=None, width=w, height=h, objects=objects)
    return Frame(index, None, image), message, labels


async def serve(settings: WebSettings, runner):
    viewer = WebViewer(settings)
    await viewer.__aenter__()
    view = viewer.add_stream(runner)
    return viewer, view


def test_settings_refuse_an_open_viewer_without_a_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    assert WebSettings(host="0.0.0.0", token_file=token_file).token_value() == "from-a-file"
    with pytest.raises(ValueError, match="not both"):
        WebSettings(token="a", token_file=token_file)
    token_file.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        WebSettings(token_file=token_file).token_value()
    with pytest.raises(ValueError, match="cannot read the viewer token file"):
        WebSettings(token_file=tmp_path / "missing").token_value()
    with pytest.raises(ValueError, match="give a token"):
        WebSettings(host="0.0.0.0")
    assert WebSettings(host="0.0.0.0", token="s3cret").token.get_secret_value() == "s3cret"
    assert WebSettings.from_address("9000").host == "127.0.0.1"
    with pytest.raises(ValueError, match="HOST:PORT"):
        WebSettings.from_address("localhost")


def test_http_api_pictures_prompts_and_refusals(davis_root):
    """Pictures carry the overlay; prompts take the MQTT checks; refusals are answered and listed."""
    runner = fake_runner()
    image = read_frame(davis_root, "car-shadow", 0)

    async def main():
        async with WebViewer(WebSettings(port=0)) as viewer:
            view = viewer.add_stream(runner)
            async with aiohttp.ClientSession(viewer.url) as http:
                async with http.get("/api/streams/cam/frame.jpg") as r:
                    assert r.status == 404  # nothing tracked yet
                await view.write(*frame_and_masks(image))
                async with http.get("/api/streams/cam/frame.jpg") as r:
                    assert r.status == 200 and r.content_type == "image/jpeg"
                    jpeg = await r.read()
                async with http.get("/api/streams/nope/frame.jpg") as r:
                    assert r.status == 404 and "no stream 'nope'" in await r.text()
                answers = []
                for body in (
                    '{"action": "add", "obj_id": 3, "points": [[10, 20]], "labels": [1]}',
                    '{"action": "add", "obj_id": 3, "points": [], "labels": []}',
                    "not json",
                ):
                    async with http.post("/api/streams/cam/prompts", data=body) as r:
                        answers.append((r.status, await r.json()))
                async with http.post("/api/streams/cam/prompts", data=b"x" * (MAX_PROMPT_BYTES + 1)) as r:
                    too_large = r.status
                async with http.get("/api/streams") as r:
                    streams = (await r.json())["streams"]
                async with http.get("/") as r:
                    page = await r.text()
        return jpeg, answers, too_large, streams, page

    jpeg, answers, too_large, streams, page = asyncio.run(main())
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(int)
    h, w = image.shape[:2]
    assert picture.shape == image.shape
    # inside object 2 (away from its contour): the blend of the frame and object 2's colour; far outside: the frame
    inside = (slice(h // 2 + 20, h - 20), slice(2 * w // 3 + 20, w - 20))
    blend = image[inside] * 0.5 + np.array(object_colour(2)) * 0.5
    assert np.abs(picture[inside] - blend).mean() < 4
    assert np.abs(picture[inside] - image[inside]).mean() > 20  # the check above would fail on the bare frame
    outside = (slice(h // 3 + 10, h // 2 - 10), slice(40, w // 2))
    assert np.abs(picture[outside] - image[outside].astype(int)).mean() < 4

    assert answers[0] == (202, {"queued": {"action": "add", "obj_id": 3, "points": [[10.0, 20.0]], "labels": [1]}})
    assert answers[1][0] == 200 and "points given without a single click" in answers[1][1]["error"]
    assert answers[2][0] == 200 and "invalid prompt message" in answers[2][1]["error"]
    assert too_large == 413
    [cam] = streams
    assert cam["id"] == "cam" and cam["frame"] == 0 and cam["size"] == [w, h]
    assert [o["id"] for o in cam["objects"]] == [1, 2] and cam["pending_prompts"] == 1
    assert cam["refused_prompts"] == 2 and len(cam["errors"]) == 2  # the oversized body never reached the inbox
    assert [p.obj_id for p in runner.inbox.take()] == [3]
    assert "<title>vos viewer</title>" in page


def test_refusals_made_by_the_engine_and_queue_overflow_are_listed():
    runner = fake_runner()

    async def main():
        async with WebViewer(WebSettings(port=0)) as viewer:
            view = viewer.add_stream(runner)
            for i in range(MAX_PENDING_PROMPTS + 1):
                runner.inbox.submit(json.dumps({"action": "remove", "obj_id": i + 1}))
            runner.inbox.refuse("unknown object id 7", '{"action": "remove", "obj_id": 7}')
            return view.summary()

    summary = asyncio.run(main())
    errors = [e["error"] for e in summary["errors"]]
    assert "the oldest is dropped" in errors[0] and errors[1] == "unknown object id 7"
    assert summary["refused_prompts"] == 2 and summary["pending_prompts"] == MAX_PENDING_PROMPTS


def test_token_is_required_and_never_echoed():
    runner = fake_runner()

    async def main():
        async with WebViewer(WebSettings(port=0, token="s3cret-token")) as viewer:
            viewer.add_stream(runner)
            async with aiohttp.ClientSession(viewer.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # IP hosts
                async with http.get("/api/streams") as r:
                    refused = r.status, await r.text()
                async with http.get("/api/streams", headers={"Authorization": "Bearer wrong"}) as r:
                    wrong = r.status
                async with http.get("/?token=s3cret-token") as r:
                    opened = r.status
                async with http.get("/api/streams") as r:  # the cookie set by the page
                    with_cookie = r.status
            async with aiohttp.ClientSession(viewer.url, headers={"Authorization": "Bearer s3cret-token"}) as http:
                async with http.post("/api/streams/cam/prompts", data='{"action": "reset"}') as r:
                    bearer = r.status
        return refused, wrong, opened, with_cookie, bearer

    (status, text), wrong, opened, with_cookie, bearer = asyncio.run(main())
    assert status == 401 and "token" in text and "s3cret" not in text
    assert (wrong, opened, with_cookie, bearer) == (401, 200, 200, 202)


def test_a_port_in_use_is_a_clear_error():
    from vos.errors import ConfigError

    async def main():
        async with WebViewer(WebSettings(port=0)) as first:
            with pytest.raises(ConfigError, match=f"cannot serve the viewer on 127.0.0.1:{first.port}"):
                async with WebViewer(WebSettings(port=first.port)):
                    pass

    asyncio.run(main())


class CaptureSink:
    """The object ids of every frame the engine delivers, in order."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, list[int]]] = []

    async def write(self, frame, message, labels) -> None:
        self.frames.append((message.frame_index, [o.id for o in message.objects]))


async def until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def long_clip(davis_root, tmp_path_factory):
    """48 frames (the 16 car-shadow frames three times) as H.264: longer than the browser test needs."""
    from tests.video_reference import write_video

    path = tmp_path_factory.mktemp("viewer") / "car-shadow-x3.mp4"
    write_video(path, [read_frame(davis_root, "car-shadow", i % 16) for i in range(48)])
    return path


def test_page_in_chromium_shows_the_stream_and_steers_the_engine(long_clip, tracking_checkpoint):
    """The picture updates; a click adds object 2 at the clicked pixel, and it appears in the next masks;
    refused prompts are shown (one refused on arrival, one by the engine); no console errors; a screenshot."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: scripts/install-dev.sh installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.async_api import async_playwright

    import vos
    from vos.engine import Engine, EngineConfig, StreamSettings

    capture = CaptureSink()
    stream = StreamSettings(source=str(long_clip), id="cam", prompts=[{"obj_id": 1, "box": [300, 100, 650, 300]}])
    model = vos.load_model(checkpoint=tracking_checkpoint, image_size=512)

    async def main():
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            async with Engine(EngineConfig(streams=[stream], web=WebSettings(port=0)), model, sinks={"cam": [capture]}) as engine:
                run = asyncio.create_task(engine.run())
                await page.goto(engine.viewer.url)
                await page.wait_for_function("window.vosViewer.pictures >= 2", timeout=90_000)
                first = int(await page.get_attribute("#picture", "data-frame"))
                assert await page.text_content("#streams tbody tr td") == "cam"

                await page.click("#new-object")
                assert await page.get_attribute(".object.selected", "data-obj") == "2"
                box = box0 = await page.locator("#picture").bounding_box()
                async with page.expect_request("**/prompts") as sent:
                    await page.mouse.click(box["x"] + 0.6 * box["width"], box["y"] + 0.45 * box["height"])
                clicked = json.loads((await sent.value).post_data)
                clicked_at = len(capture.frames)
                # the click is marked at once, at the clicked spot, before the engine has tracked it
                marker = await page.locator(".marker.point").bounding_box()
                marked_at_once = not any(2 in ids for _, ids in capture.frames)
                await until(lambda: any(2 in ids for _, ids in capture.frames), 90, "object 2 in the masks")
                frame_with_2 = next(i for i, (_, ids) in enumerate(capture.frames) if 2 in ids)
                await page.wait_for_function("document.querySelectorAll('.marker').length === 0", timeout=30_000)

                box = await page.locator("#picture").bounding_box()  # the object list above may have grown
                async with page.expect_request("**/prompts") as sent:  # shift-click: "not here"
                    await page.keyboard.down("Shift")
                    await page.mouse.click(box["x"] + 0.1 * box["width"], box["y"] + 0.9 * box["height"])
                    await page.keyboard.up("Shift")
                negative = json.loads((await sent.value).post_data)
                box = await page.locator("#picture").bounding_box()
                async with page.expect_request("**/prompts") as sent:  # drag: a box
                    await page.mouse.move(box["x"] + 0.25 * box["width"], box["y"] + 0.5 * box["height"])
                    await page.mouse.down()
                    await page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.75 * box["height"], steps=5)
                    await page.mouse.up()
                dragged = json.loads((await sent.value).post_data)

                await page.click("summary")
                await page.fill("#raw", '{"action": "remove", "obj_id": 9}')  # well-formed: refused when applied
                await page.click("#send-raw")
                await page.fill("#raw", '{"action": "add", "obj_id": 0, "points": [[1, 1]], "labels": [1]}')
                await page.click("#send-raw")
                await page.wait_for_function(
                    "[...document.querySelectorAll('#errors li')].some(e => e.textContent.includes('unknown object id 9'))",
                    timeout=60_000,
                )
                errors = await page.locator("#errors li").all_text_contents()
                await page.wait_for_function(f"Number(document.querySelector('#picture').dataset.frame) > {first + 1}")
                engine.stop()
                reports = await run
            # leaving the engine closed the page's WebSocket: the page says so and stops asking
            await page.wait_for_function("document.querySelector('#connection').textContent.includes('stopped')", timeout=10_000)
            await asyncio.sleep(2.5)  # a poll after the end would log a failed request
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)
            await browser.close()
        marked = (marked_at_once, marker["x"] + marker["width"] / 2 - box0["x"], marker["y"] + marker["height"] / 2 - box0["y"])
        return first, clicked, negative, dragged, clicked_at, frame_with_2, errors, problems, reports, marked, box0

    first, clicked, negative, dragged, clicked_at, frame_with_2, errors, problems, [report], marked, box0 = asyncio.run(main())
    assert marked[0] and marked[1:] == pytest.approx((0.6 * box0["width"], 0.45 * box0["height"]), abs=3)
    assert clicked["action"] == "add" and clicked["obj_id"] == 2 and clicked["labels"] == [1]
    (x, y), = clicked["points"]
    assert abs(x - 0.6 * 854) <= 2 and abs(y - 0.45 * 480) <= 2  # page pixels mapped to frame pixels
    assert negative["obj_id"] == 2 and negative["labels"] == [0]
    assert negative["points"][0] == pytest.approx([0.1 * 854, 0.9 * 480], abs=2)
    assert dragged["obj_id"] == 2 and dragged["box"] == pytest.approx([0.25 * 854, 0.5 * 480, 0.5 * 854, 0.75 * 480], abs=2)
    assert frame_with_2 <= clicked_at + 2  # applied to the next frame tracked (one may be in flight)
    assert any("unknown object id 9" in e for e in errors), errors
    assert any("obj_id" in e and "greater than or equal to 1" in e for e in errors), errors
    assert problems == []
    assert report.stats.refused_prompts == 2 and report.state == "stopped"
    assert (ARTIFACTS / "viewer.png").stat().st_size > 10_000


def test_stored_results_are_browsed_with_a_slider(davis_root, tmp_path):
    """`vos view`: the page pages through stored label maps; pictures are the overlays; no prompts are taken."""
    import shutil

    from vos.streams.label_map import write_label_map
    from vos.viewer.review import ResultsView, serve_results

    frames, results = tmp_path / "frames", tmp_path / "results"
    frames.mkdir()
    results.mkdir()
    for i in range(3):
        shutil.copy(davis_root / "JPEGImages" / "480p" / "car-shadow" / f"{i:05d}.jpg", frames / f"{i:05d}.jpg")
    labels = frame_and_masks(read_frame(davis_root, "car-shadow", 0))[2]
    for i in (0, 2):  # frame 1 has no results: drawn bare
        write_label_map(results / f"{i:05d}.png", labels)
    port = free_port()

    async def main():
        stop = asyncio.Event()
        server = asyncio.create_task(serve_results(ResultsView(frames, results), WebSettings(port=port), stop))
        url = f"http://127.0.0.1:{port}/"
        async with aiohttp.ClientSession(url) as http:
            await until_serving(http)
            async with http.get("/api/streams") as r:
                [summary] = (await r.json())["streams"]
            pictures = {}
            for i in (1, 2):
                async with http.get(f"/api/streams/results/frames/{i}.jpg") as r:
                    pictures[i] = await r.read()
            async with http.get("/api/streams/results/frames/3.jpg") as r:
                past_end = r.status
            async with http.post("/api/streams/results/prompts", data='{"action": "reset"}') as r:
                prompt = await r.json()
        shown = hidden = None
        if CHROMIUM.exists():
            from playwright.async_api import async_playwright

            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
                page = await browser.new_page()
                await page.goto(url)
                await page.wait_for_function("window.vosViewer.pictures >= 1")
                await page.locator("#slider").fill("2")
                await page.wait_for_function("window.vosViewer.pictures >= 2")
                shown = await page.get_attribute("#picture", "data-frame"), await page.text_content("#position")
                hidden = [not await page.locator(f"text={t}").is_visible() for t in ("Refused prompts", "New object")]
                await browser.close()
        stop.set()
        await server
        return summary, pictures, past_end, prompt, shown, hidden

    summary, pictures, past_end, prompt, shown, hidden = asyncio.run(main())
    assert summary["stored"] and summary["frames"] == 3 and summary["with_masks"] == 2
    decode = lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(int)  # noqa: E731
    image1, image2 = read_frame(davis_root, "car-shadow", 1), read_frame(davis_root, "car-shadow", 2)
    h, w = image2.shape[:2]
    inside = (slice(h // 2 + 20, h - 20), slice(2 * w // 3 + 20, w - 20))
    assert np.abs(decode(pictures[2])[inside] - (image2[inside] * 0.5 + np.array(object_colour(2)) * 0.5)).mean() < 4
    assert np.abs(decode(pictures[1])[inside] - image1[inside]).mean() < 4  # no label map: the bare frame
    assert past_end == 404 and "stored results take no prompts" in prompt["error"]
    if os.environ.get("CI") or CHROMIUM.exists():
        assert shown == ("2", "frame 2 of 3")
        assert hidden == [True, True]  # stored results take no prompts: no prompt tools, no refusals list


async def until_serving(http: aiohttp.ClientSession, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with http.get("/api/streams") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


def test_serve_config_takes_the_viewer_and_its_token_from_the_environment(tmp_path, monkeypatch):
    from vos.engine.settings import load_engine_config
    from vos.errors import ConfigError

    path = tmp_path / "engine.yaml"
    path.write_text("web: {host: 0.0.0.0, port: 8099}\nstreams: [{id: cam, source: clip.mp4}]\n")
    with pytest.raises(ConfigError, match="web: the viewer on 0.0.0.0 would let anyone"):
        load_engine_config(path)
    monkeypatch.setenv("VOS_WEB__TOKEN", "from-env")
    web = load_engine_config(path).web
    assert (web.host, web.port, web.token.get_secret_value()) == ("0.0.0.0", 8099, "from-env")
    assert "from-env" not in repr(web)


def test_track_web_prints_its_address_and_waits_for_the_page(tmp_path, tracking_checkpoint):
    """`vos track --web --web-wait` on a short file: the address (with the token hint, never the token) is printed
    as soon as the viewer listens; no frame is tracked before a page connects; after the file ends the viewer
    stays up until Ctrl-C, which then ends the process cleanly."""
    import signal
    import subprocess
    import sys

    frames = tmp_path / "frames"
    frames.mkdir()
    image = np.full((48, 64, 3), 90, np.uint8)
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:05d}.png"), image)
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vos.cli", "track", str(frames), "--point", "1=20,20", "--checkpoint",
         str(tracking_checkpoint), "--image-size", "512", "--web", str(port), "--web-token-file", str(token),
         "--web-wait", "--out", str(tmp_path / "out"), "--quiet"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []

    def read_until(text: str, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while not any(text in line for line in lines):
            assert time.monotonic() < end and process.poll() is None, lines
            lines.append(process.stderr.readline())

    try:
        read_until("waiting for a page to connect")
        assert any(f"vos: viewer on http://127.0.0.1:{port}/?token=..." in line for line in lines), lines
        time.sleep(1.0)
        assert not (tmp_path / "out" / "00000.png").exists()  # nothing tracked while nobody looks

        async def look() -> None:
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer s3cret-token"}) as http:
                async with http.get(f"http://127.0.0.1:{port}/api/streams") as response:
                    [stream] = [s["id"] for s in (await response.json())["streams"]]
                async with http.ws_connect(f"ws://127.0.0.1:{port}/api/streams/{stream}/ws"):
                    await asyncio.sleep(0.5)

        asyncio.run(look())
        read_until("the viewer stays on")
        assert len(list((tmp_path / "out").glob("*.png"))) == 3 and process.poll() is None
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        process.kill()
        process.wait()
    assert not any("s3cret-token" in line for line in lines + [process.stderr.read()])
