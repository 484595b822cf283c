"""Auto-discovery (`TrackerConfig.discover`): new objects from the everything mode, prompted by their masks.

The clip is synthetic (coloured shapes moving on a grey background) and the everything mode's generator is swapped
for one that returns each shape's pixels (what a trained model's grid would find there); the tracker is the real one
with random weights, so that what is checked is discovery's own work: which masks become objects, their ids, the
object limit, and that tracked objects are not added again.
"""

from __future__ import annotations

import numpy as np
import pytest

import vos
from vos.config import DiscoverySettings

H, W = 96, 128
BACKGROUND = (128, 128, 128)


def shapes(t: int) -> dict[tuple[int, int, int], np.ndarray]:
    """The shapes on frame t by colour: a red square and a blue disc moving right; a green bar from frame 1 on; a
    yellow square from frame 2 on."""
    yy, xx = np.mgrid[:H, :W]
    out = {
        (255, 0, 0): (np.abs(xx - 20 - 2 * t) <= 9) & (np.abs(yy - 20) <= 9),
        (0, 0, 255): (xx - 80 - 2 * t) ** 2 + (yy - 30) ** 2 <= 12**2,
    }
    if t >= 1:
        out[(0, 255, 0)] = (np.abs(xx - 40) <= 20) & (np.abs(yy - 75) <= 6)
    if t >= 2:
        out[(255, 255, 0)] = (np.abs(xx - 110) <= 6) & (np.abs(yy - 80) <= 6)
    return out


def frame(t: int) -> np.ndarray:
    image = np.empty((H, W, 3), np.uint8)
    image[:] = BACKGROUND
    for colour, mask in shapes(t).items():
        image[mask] = colour
    return image


def colour_regions(image: np.ndarray) -> list[dict]:
    """Each colour but the background's as a record, the largest first (the highest predicted IoU)."""
    colours = {tuple(c) for c in image.reshape(-1, 3)} - {BACKGROUND}
    masks = sorted(((image == c).all(-1) for c in colours), key=lambda m: -m.sum())
    return [{"segmentation": m, "predicted_iou": 0.9 - 0.01 * i} for i, m in enumerate(masks)]


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return vos.load_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, image_size=512)


def test_discovery_adds_shapes_once_with_fresh_ids_within_max_objects(model):
    """Tracked objects are known by their masks on the previous frame and their mask prompts for this one. With
    random weights only prompted frames' masks are the shapes, so every look here follows one."""
    tracker = vos.Tracker(model, max_objects=3, discover=DiscoverySettings(every_n_frames=1, min_area=20))
    tracker.discoverer.generator.generate = colour_regions
    red, blue, green = shapes(0)[(255, 0, 0)], shapes(0)[(0, 0, 255)], shapes(1)[(0, 255, 0)]
    tracker.add_prompt(7, mask=red)  # a user's object: its pending mask prompt is known, not found again
    first = tracker.step(frame(0))
    assert first.new_objects == [8] and sorted(first.masks) == [7, 8]
    assert (first.masks[8] == blue).mean() > 0.99  # prompted by the blue disc's mask on this very frame
    second = tracker.step(frame(1))  # red and blue moved 2 px: still the tracked objects; the green bar is new
    assert second.new_objects == [9] and (second.masks[9] == green).mean() > 0.99
    tracker.remove_object(9)
    for obj_id, colour in ((7, (255, 0, 0)), (8, (0, 0, 255))):
        tracker.add_prompt(obj_id, mask=shapes(2)[colour])
    third = tracker.step(frame(2))  # room for one of green and yellow: the larger, with an id never used before
    assert third.new_objects == [10] and (third.masks[10] == green).mean() > 0.99
    assert tracker.step(frame(3)).new_objects == []  # max_objects reached: the yellow square waits ...
    assert tracker.discoverer.looks == 3  # ... and the generator does not run
    assert tracker.discoverer.found == 3 and sorted(tracker.object_ids) == [7, 8, 10]


def test_discovery_looks_on_the_frames_asked(model):
    every = vos.Tracker(model, discover=DiscoverySettings(every_n_frames=2))
    first_only = vos.Tracker(model, discover=DiscoverySettings())
    for tracker in (every, first_only):
        tracker.discoverer.generator.generate = colour_regions
        for t in range(3):
            tracker.step(frame(t))
    assert every.discoverer.looks == 2 and first_only.discoverer.looks == 1  # frames 0 and 2; frame 0
    assert sorted(first_only.object_ids) == [1, 2]  # what frame 0 holds, ids from 1


def test_discovery_settings_are_checked():
    with pytest.raises(ValueError, match="every_n_frames"):
        DiscoverySettings(every_n_frames=-1)
    assert DiscoverySettings().everything.hierarchical  # hierarchical by default here, not in MaskGenerator
    assert DiscoverySettings(everything={"points_per_side": 16}).everything.hierarchical  # also when others are set
    assert not DiscoverySettings(everything={"hierarchical": False}).everything.hierarchical
    assert not vos.MaskGeneratorSettings().hierarchical


class ColourGenerator:
    """Stands in for `MaskGenerator` in the engine: the colour regions of each frame."""

    def __init__(self, model, settings=None) -> None:
        self.settings = settings

    def generate(self, image: np.ndarray) -> list[dict]:
        return colour_regions(image)


def test_track_and_batch_discover_from_the_command_line(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """`vos track FOLDER --discover` with no prompt: the first frame's objects in every masks line, counted in
    the summary; `vos batch` takes --discover in place of prompts; discovery flags without --discover are refused."""
    import json

    from PIL import Image

    from vos.cli import main
    from vos.distributed.batch import jobs_from_inputs
    from vos.errors import ConfigError

    monkeypatch.setattr("vos.tracking.discovery.MaskGenerator", ColourGenerator)
    clip = tmp_path / "clip"
    clip.mkdir()
    for t in range(3):
        Image.fromarray(frame(t)).save(clip / f"{t:05d}.png")
    model = ["--checkpoint", str(tiny_checkpoint), "--config", "sam2.1_hiera_t", "--image-size", "512", "--quiet"]
    assert main(["track", str(clip), "--discover", "--out", str(tmp_path / "out"), *model]) == 0
    assert "2 objects discovered" in capsys.readouterr().err
    lines = [json.loads(line) for line in (tmp_path / "out" / "masks.jsonl").read_text().splitlines()]
    assert [sorted(o["id"] for o in line["objects"]) for line in lines] == [[1, 2]] * 3
    assert lines[0]["objects"][0]["area"] == int(shapes(0)[(0, 0, 255)].sum())  # the larger shape, found first
    assert main(["track", str(clip), "--discover-min-area", "5", "--out", str(tmp_path / "x"), *model]) == 2
    assert "give --discover too" in capsys.readouterr().err
    assert [job.prompts for job in jobs_from_inputs([clip], discover=True)] == [()]
    with pytest.raises(ConfigError, match="or --discover"):
        jobs_from_inputs([clip])


def test_discovery_flags_reach_the_everything_mode():
    """The grid and thresholds that decide how much the everything mode finds have discovery flags; errors name
    the flag given."""
    import argparse

    from vos.cli.options import add_discovery_arguments, tracker_from_args
    from vos.config import MaskGeneratorSettings
    from vos.errors import ConfigError

    parser = argparse.ArgumentParser()
    add_discovery_arguments(parser)
    parse = lambda *flags: tracker_from_args(parser.parse_args(flags)).discover  # noqa: E731
    assert parse("--discover") == DiscoverySettings()
    found = parse("--discover", "--discover-points-per-side", "8", "--discover-pred-iou-thresh", "0.3",
                  "--discover-stability-score-thresh", "0.5", "--discover-min-area", "9")  # fmt: skip
    assert found == DiscoverySettings(min_area=9, everything=MaskGeneratorSettings(
        points_per_side=8, pred_iou_thresh=0.3, stability_score_thresh=0.5, hierarchical=True))  # fmt: skip
    assert not parse("--discover", "--no-discover-hierarchical").everything.hierarchical
    with pytest.raises(ConfigError, match="give --discover too"):
        parse("--discover-points-per-side", "8")
    with pytest.raises(ConfigError, match="--discover-points-per-side: Input should be greater than or equal to 1"):
        parse("--discover", "--discover-points-per-side", "0")


def test_serve_yaml_sets_discovery_per_stream(model, tmp_path, monkeypatch):
    """`discover:` on a stream overrides the tracker's: `false` turns it off for that stream only; the engine's
    reports count what each stream found."""
    import asyncio

    from PIL import Image

    from vos.engine.engine import Engine
    from vos.engine.settings import load_engine_config

    monkeypatch.setattr("vos.tracking.discovery.MaskGenerator", ColourGenerator)
    clip = tmp_path / "clip"
    clip.mkdir()
    for t in range(2):
        Image.fromarray(frame(t)).save(clip / f"{t:05d}.png")
    (tmp_path / "engine.yaml").write_text(
        "tracker: {discover: {every_n_frames: 1}}\n"
        f"streams:\n  - {{id: a, source: {clip}}}\n  - {{id: b, source: {clip}, discover: false}}\n"
        f"  - {{id: c, source: {clip}, discover: {{max_new_per_frame: 1}}}}\n"
    )
    config = load_engine_config(tmp_path / "engine.yaml")
    assert [s.tracker_config(config.tracker).discover for s in config.streams] == [
        DiscoverySettings(every_n_frames=1), None, DiscoverySettings(max_new_per_frame=1)
    ]

    async def run():
        async with Engine(config, model) as engine:
            return await engine.run()

    found = [r.stats.discovered_objects for r in asyncio.run(run())]
    assert found == [3, 0, 1]  # a: 2 on frame 0 and the bar on frame 1; b: none; c: one, on frame 0 only


def test_a_result_is_not_changed_by_later_prompts(model):
    """The engine encodes a frame's result in another thread while the next frame's prompts apply: removing an
    object must not change the masks of a result already returned (the tracker keeps its own copy)."""
    tracker = vos.Tracker(model, discover=DiscoverySettings())
    tracker.discoverer.generator.generate = colour_regions
    result = tracker.step(frame(0))
    ids = sorted(result.masks)
    tracker.remove_object(ids[0])
    assert sorted(result.masks) == ids and ids[0] not in tracker.object_ids
