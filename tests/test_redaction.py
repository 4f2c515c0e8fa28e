"""redact=faces on real photos with the real model: every labelled face is hidden, the rest of
the picture is untouched, and a missing detector never lets faces through."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import pyvips
from tests import images
from tests.conftest import FACEDATA, facedata_manifest
from tests.model_fixtures import require_model_dir

from focal.detection import DetectionFailed, Detector, Face, RGBImage
from focal.errors import OptionError, RedactionError
from focal.options import parse_options
from focal.pipeline import transform

PHOTOS = (
    "singles/skimage_astronaut.png",
    "singles/mpl_grace_hopper.jpg",
    "wider_face/WIDER_val/images/13--Interview/13_Interview_Interview_Sequences_13_31.jpg",
    "wider_face/WIDER_val/images/13--Interview/13_Interview_Interview_Sequences_13_108.jpg",
    "wider_face/WIDER_val/images/13--Interview/13_Interview_Interview_On_Location_13_287.jpg",
)
CHANGED = 12.0  # mean absolute difference (0..255) inside a labelled face, at least
MARGIN = 0.5  # outside the faces grown by this share of their size, nothing may change


@pytest.fixture(scope="module")
def detector() -> Detector:
    from focal.face.sessions import load_detector

    return load_detector(require_model_dir())


def entry(path: str) -> dict[str, Any]:
    found = [row for row in facedata_manifest() if row["path"] == path]
    assert found, path
    return found[0]


def pixels(data: bytes) -> np.ndarray:
    image = pyvips.Image.new_from_buffer(data, "")
    return np.ndarray(
        buffer=image.write_to_memory(),
        dtype=np.uint8,
        shape=(image.height, image.width, image.bands),
    ).astype(np.int16)


@pytest.mark.slow
@pytest.mark.parametrize("style", ["blur", "pixelate"])
@pytest.mark.parametrize("path", PHOTOS)
def test_every_labelled_face_is_hidden_and_nothing_else_changes(
    detector: Detector, path: str, style: str
) -> None:
    data = (FACEDATA / path).read_bytes()
    plain = pixels(transform(data, parse_options("format=png")).data)
    result = transform(
        data, parse_options(f"format=png,redact=faces,redact-style={style}"), detector=detector
    )
    hidden = pixels(result.data)
    assert hidden.shape == plain.shape
    difference = np.abs(hidden - plain).mean(axis=2)
    untouched = np.ones(difference.shape, dtype=bool)
    labelled = entry(path)["faces"]
    for left, top, right, bottom in labelled:
        assert difference[top:bottom, left:right].mean() > CHANGED, (path, style, left, top)
    detected = [face["box"] for face in result.description["faces"]]  # some are unlabelled faces
    for left, top, right, bottom in [*labelled, *detected]:
        grow_x, grow_y = (right - left) * MARGIN, (bottom - top) * MARGIN
        untouched[
            max(0, int(top - grow_y)) : int(bottom + grow_y) + 1,
            max(0, int(left - grow_x)) : int(right + grow_x) + 1,
        ] = False
    assert difference[untouched].max() == 0, "pixels outside the faces changed"
    assert result.description["redacted"] == len(detected) >= len(labelled)


@pytest.mark.slow
def test_redaction_follows_the_faces_through_a_resize_and_a_crop(detector: Detector) -> None:
    path = PHOTOS[2]  # two faces, 1024x683
    data = (FACEDATA / path).read_bytes()
    options = "width=300,height=300,fit=cover,gravity=face,format=png"
    plain = pixels(transform(data, parse_options(options)).data)
    hidden = pixels(
        transform(data, parse_options(options + ",redact=faces"), detector=detector).data
    )
    description = json.loads(
        transform(data, parse_options(options.replace("png", "json")), detector=detector).data
    )
    crop = description["crop"]
    scale = 300 / crop["width"]
    difference = np.abs(hidden - plain).mean(axis=2)
    for left, top, right, bottom in entry(path)["faces"]:
        x0, y0 = int((left - crop["left"]) * scale), int((top - crop["top"]) * scale)
        x1, y1 = int((right - crop["left"]) * scale), int((bottom - crop["top"]) * scale)
        assert difference[max(0, y0) : y1, max(0, x0) : x1].mean() > CHANGED


@pytest.mark.slow
def test_every_frame_of_an_animation_is_redacted(detector: Detector) -> None:
    # the astronaut moving across a wider canvas over three frames: each frame's face is hidden
    photo = pyvips.Image.new_from_buffer((FACEDATA / PHOTOS[0]).read_bytes(), "")[0:3]
    frames = [photo.embed(x, 0, 700, 512, extend="white") for x in (0, 90, 180)]
    strip = pyvips.Image.arrayjoin(frames, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 512)
    data = bytes(strip.webpsave_buffer(lossless=True))
    plain = transform(data, parse_options("format=webp,quality=100"))
    hidden = transform(
        data, parse_options("format=webp,quality=100,redact=faces"), detector=detector
    )
    assert hidden.description["frames"] == 3 and hidden.description["redacted"] >= 3
    a = pyvips.Image.new_from_buffer(plain.data, "", n=-1)
    b = pyvips.Image.new_from_buffer(hidden.data, "", n=-1)
    left, top, right, bottom = entry(PHOTOS[0])["faces"][0]
    for index, shift in enumerate((0, 90, 180)):
        box = (left + shift, index * 512 + top, right - left, bottom - top)
        assert images.mean_difference(a.crop(*box), b.crop(*box)) > CHANGED, index


class Broken:
    model_id = "broken"

    def detect(self, batch: list[RGBImage]) -> list[list[Face]]:
        raise DetectionFailed("the worker died")


@pytest.mark.parametrize("detector", [None, Broken()])
def test_without_a_working_detector_faces_are_never_served(detector: Detector | None) -> None:
    data = (images.DEMO / "astronaut.jpg").read_bytes()
    with pytest.raises(RedactionError) as raised:
        transform(data, parse_options("width=100,redact=faces"), detector=detector)
    assert raised.value.status == 503
    assert "not served unredacted" in raised.value.public


def test_redact_options_need_redact_faces() -> None:
    with pytest.raises(OptionError, match="redact=faces alongside it for redact-style"):
        parse_options("redact-style=pixelate")
