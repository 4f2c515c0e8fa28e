from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from focal.errors import FocalError, OptionError
from focal.geometry import Box, Size, plan
from focal.options import (
    BY_KEY,
    Border,
    Fit,
    Format,
    Gravity,
    Metadata,
    Options,
    Overlay,
    Trim,
    normalise,
    options_markdown,
    parse_options,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "options.md"


def test_every_option_long_and_short() -> None:
    options = parse_options(
        "w=256,h=128,dpr=2,fit=cover,g=face,face-zoom=0.5,f=webp,q=70,background=#102030,"
        "rotate=90,flip=hv,trim=1;2;3;4,blur=3,sharpen=2,brightness=1.1,contrast=0.9,gamma=2.2,"
        "saturation=0,metadata=none,anim=false,onerror=redirect"
    )
    assert options == Options(
        width=256,
        height=128,
        dpr=2.0,
        fit=Fit.COVER,
        gravity=Gravity("face"),
        zoom=0.5,
        format=Format.WEBP,
        quality=70,
        background=(16, 32, 48, 255),
        rotate=90,
        flip="hv",
        trim=Trim(1, 2, 3, 4),
        blur=3.0,
        sharpen=2.0,
        brightness=1.1,
        contrast=0.9,
        gamma=2.2,
        saturation=0.0,
        metadata=Metadata.NONE,
        anim=False,
        onerror="redirect",
    )
    assert (options.target_width, options.target_height) == (512, 256)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("gravity=0.25x0.75", Gravity("point", 0.25, 0.75)),
        ("gravity=left", Gravity("left")),
        ("gravity=auto", Gravity("auto")),
    ],
)
def test_gravity_forms(text: str, value: Gravity) -> None:
    assert parse_options(text).gravity == value


@pytest.mark.parametrize(
    ("text", "rgba"),
    [
        ("background=red", (255, 0, 0, 255)),
        ("background=#abc", (170, 187, 204, 255)),
        ("background=#11223344", (17, 34, 51, 68)),
        ("background=rgb(1,2,3)", (1, 2, 3, 255)),
        ("background=rgba(1,2,3,0.5)", (1, 2, 3, 128)),
        ("background=transparent", (0, 0, 0, 0)),
    ],
)
def test_css_colours(text: str, rgba: tuple[int, int, int, int]) -> None:
    assert parse_options(text).background == rgba


def test_quality_names() -> None:
    assert parse_options("quality=high").quality == 90
    assert parse_options("q=low").quality == 50


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo=1", "Expected one of anim, background, "),
        ("width=-5", "Expected an integer from 1 to 12000 for width but received '-5'"),
        ("width=abc", "Expected an integer from 1 to 12000 for width but received 'abc'"),
        ("w=0", "Expected an integer from 1 to 12000 for w but received '0'"),
        ("zoom=2", "Expected a number from 0 to 1 for zoom but received '2'"),
        ("zoom=nan", "Expected a number from 0 to 1 for zoom but received 'nan'"),
        (
            "gravity=sideways",
            "Expected one of center, auto, face, left, right, top, bottom, or XxY with X and Y "
            "from 0 to 1 for gravity but received 'sideways'",
        ),
        ("gravity=2x0.5", "for gravity but received '2x0.5'"),
        (
            "fit=stretch",
            "Expected one of scale-down, contain, cover, crop, pad, squeeze, scale-up, "
            "aspect-crop for fit",
        ),
        ("width=1,w=2", "Expected a single value for width but received 'width=1 and w=2'"),
        ("width=1,width=1", "Expected a single value for width"),
        ("width", "Expected key=value pairs separated by commas for width but received 'width'"),
        ("width=1,,height=2", "Expected key=value pairs separated by commas"),
        ("dpr=4", "Expected a number from 1 to 3 for dpr but received '4'"),
        ("quality=101", "for quality but received '101'"),
        ("rotate=45", "Expected one of 0, 90, 180, 270 for rotate but received '45'"),
        ("background=rgb(300,0,0)", "Expected a CSS colour"),
        ("trim=1;2;3", "Expected border, or top;right;bottom;left in pixels for trim"),
        ("anim=yes", "Expected true or false for anim but received 'yes'"),
        ("brightness=0", "Expected a number above 0 and at most 10 for brightness"),
        ("onerror=ignore", "Expected one of redirect for onerror but received 'ignore'"),
        # hostile forms: non-ASCII digits, numbers past int()'s reach, float() spellings
        # a superscript two (str.isdigit() says yes, int() says no), a circled one, Arabic-Indic
        # digits (which int() and float() take), an underscore (float() reads "1_0" as 10)
        ("width=\u00b2", "for width but received"),
        ("width=\u2460", "for width but received"),
        ("height=\u0661\u0662", "for height but received"),
        ("dpr=\u0661", "for dpr but received"),
        ("blur=1_0", "for blur but received"),
        ("width=" + "9" * 60, "for width but received"),
        ("quality=" + "1" * 500, "for quality but received"),
        ("trim=\u00b2;0;0;0", "for trim but received"),
        ("background=rgb(\u00b2,0,0)", "for background but received"),
        ("background=rgb(\u0661,0,0)", "for background but received"),
        ("background=rgba(1,2,3,\u00b2)", "for background but received"),
        ("gravity=\u00b2x0.5", "for gravity but received"),
        ("zoom=nan", "for zoom but received"),
        ("zoom=inf", "for zoom but received"),
    ],
)
def test_errors_name_the_option_what_was_expected_and_what_came(text: str, message: str) -> None:
    with pytest.raises(OptionError) as raised:
        parse_options(text)
    assert message in raised.value.public
    assert raised.value.status == 400


def test_empty_options_are_the_defaults() -> None:
    assert parse_options("") == Options()


def test_normalise_is_canonical_whatever_the_spelling() -> None:
    a = parse_options("w=256,fit=cover,g=face,q=high,background=red")
    b = parse_options("background=#ff0000,quality=90,gravity=face,fit=cover,width=256")
    assert normalise(a) == normalise(b)
    assert normalise(a) == "background=#ff0000ff,fit=cover,gravity=face,quality=90,width=256"
    assert normalise(Options()) == ""


def test_docs_list_every_option() -> None:
    assert options_markdown() in DOCS.read_text(), "docs/options.md is stale: regenerate its table"


# ---- hostile option strings: every one is a transformation or a 400 naming the option --------


@pytest.mark.timeout(10)
@pytest.mark.parametrize("digits", [20_000, 60_000])
def test_long_gravity_is_refused_for_its_length_at_once(digits: int) -> None:
    # the XxY grammar once backtracked quadratically: 60,000 digits took 69 s
    with pytest.raises(OptionError, match="at most 1024 characters for options"):
        parse_options("gravity=" + "1" * digits + "a")


def test_integers_past_the_4300_digit_limit_of_int_are_option_errors() -> None:
    from focal.options import OPTIONS

    width = next(spec for spec in OPTIONS if spec.name == "width")
    with pytest.raises(OptionError, match="for width but received"):
        width.parse("width", "9" * 5000)  # int() itself would raise ValueError here


def test_a_long_value_is_refused_naming_the_option_and_the_limit() -> None:
    with pytest.raises(OptionError) as raised:
        parse_options("gravity=" + "1" * 200 + "a")
    assert raised.value.public == (
        "Expected a value of at most 64 characters for gravity but received '201 characters'"
    )


def test_the_gravity_grammar_is_linear() -> None:
    # every value the length bound lets through, parsed in far less than the old worst case
    import time

    worst = ["1" * 31 + "x" + "1" * 31 + "a", "." * 63 + "a", "1" * 63 + "x"]
    started = time.process_time()
    for text in worst * 200:
        with pytest.raises(OptionError):
            parse_options("gravity=" + text)
    assert time.process_time() - started < 5  # CPU time; the quadratic grammar took minutes


def test_gravity_points_still_parse() -> None:
    assert parse_options("gravity=.5x1").gravity == Gravity("point", 0.5, 1.0)
    assert parse_options("gravity=0.25x0.75").gravity == Gravity("point", 0.25, 0.75)
    assert parse_options("gravity=1.x0").gravity == Gravity("point", 1.0, 0.0)


def test_zoom_without_gravity_face_is_refused_when_parsed() -> None:
    with pytest.raises(OptionError) as raised:
        parse_options("width=100,zoom=0.5")
    assert raised.value.public == (
        "Expected gravity=face alongside it for zoom but received 'zoom=0.5 without it'"
    )
    assert parse_options("zoom=0.5,gravity=face").needs_faces
    assert not parse_options("gravity=auto").needs_faces


KEYS = st.sampled_from([*sorted(BY_KEY), "x", "", "width ", " w"])
VALUES = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[-+.0-9x;#a-z(), %]{0,40}", fullmatch=True),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def options_or_option_error(text: str) -> Options | None:
    """The parsed options, or None after checking the error is a 400 naming an option."""
    try:
        return parse_options(text)
    except OptionError as error:
        assert error.status == 400
        named = " for " in error.public and " but received " in error.public
        assert named or error.public.startswith("The option "), error.public  # unsupported ones
        return None


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_is_options_or_an_option_error(text: str) -> None:
    options_or_option_error(text)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(KEYS, VALUES), max_size=6))
def test_arbitrary_key_value_lists_are_options_or_an_option_error(
    pairs: list[tuple[str, str]],
) -> None:
    text = ",".join(f"{key}={value}" for key, value in pairs)
    options = options_or_option_error(text)
    if options is not None:  # parsing is deterministic, and so is the cache key
        assert parse_options(text) == options
        assert normalise(parse_options(text)) == normalise(options)


# ---- Options built in code: checked when made, with the parser's messages ---------------------


def test_an_options_made_in_code_is_checked_like_a_parsed_one() -> None:
    with pytest.raises(OptionError) as raised:
        Options(zoom=2.0, gravity="face")  # type: ignore[arg-type]
    assert raised.value.public == "Expected a number from 0 to 1 for zoom but received 2.0"
    assert raised.value.status == 400


def test_replace_cannot_make_an_invalid_options() -> None:
    options = parse_options("width=256,fit=cover")
    with pytest.raises(OptionError, match=r"^Expected an integer from 1 to 12000 for width "):
        dataclasses.replace(options, width=-1)
    with pytest.raises(OptionError, match="for quality but received 0"):
        dataclasses.replace(options, quality=0)
    with pytest.raises(OptionError, match="for dpr but received nan"):
        dataclasses.replace(options, dpr=math.nan)
    with pytest.raises(OptionError, match="for gravity"):
        dataclasses.replace(options, gravity=Gravity("point", x=2.0))  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="fit=outside is not supported"):
        dataclasses.replace(options, fit="outside")  # type: ignore[arg-type]


def test_text_values_given_in_code_are_read_as_the_url_reads_them() -> None:
    made = Options(width="auto", fit="fill", gravity="face", quality="high", format="jpg")  # type: ignore[arg-type]
    assert made == parse_options("width=auto,fit=fill,gravity=face,quality=high,format=jpg")
    assert made.width_auto and made.width is None and made.fit is Fit.SQUEEZE


def test_overlays_and_records_made_in_code_are_checked() -> None:
    with pytest.raises(OptionError, match=r"for draw\[0\]\.opacity but received 2"):
        Options(draw=(Overlay(url="logo.png", opacity=2.0),))
    with pytest.raises(OptionError, match=r"for trim\.top but received -1"):
        Trim(top=-1)
    with pytest.raises(OptionError, match="for border top"):
        Border(top=5000)


sizes = st.integers(min_value=1, max_value=4000).map(float)
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-20_000, max_value=20_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["face", "auto", "cover", "crop", "pad", "0.5x0.5", "auto", "jpg"]),
)
geometry_fields = ("width", "height", "dpr", "fit", "gravity", "zoom")


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(st.sampled_from(geometry_fields), anything, max_size=6),
    st.tuples(sizes, sizes),
    st.lists(st.tuples(sizes, sizes, sizes, sizes), max_size=3),
)
def test_any_options_that_is_made_plans_or_raises_a_focal_error(
    values: dict[str, object], source: tuple[float, float], faces: list[tuple[float, ...]]
) -> None:
    try:
        options = Options(**values)  # type: ignore[arg-type]
    except OptionError as error:
        assert " for " in error.public or error.public.startswith("The option "), error.public
        return
    boxes = [Box(x, y, x + w, y + h) for x, y, w, h in faces]
    with contextlib.suppress(FocalError):  # a FocalError is a clear error; anything else is not
        plan(
            Size(int(source[0]), int(source[1])),
            options.target_width,
            options.target_height,
            options.fit,
            options.gravity,
            zoom=options.zoom,
            faces=boxes,
        )


def test_the_library_answers_bad_arguments_with_option_errors() -> None:
    import pyvips

    from focal.encode import encode
    from focal.pipeline import transform

    data = (
        Path(__file__).resolve().parents[1] / "src" / "focal" / "demo" / "logo.png"
    ).read_bytes()
    with pytest.raises(OptionError, match="for face_crop_side but received 'sideways'"):
        transform(data, Options(), face_crop_side="sideways")
    with pytest.raises(OptionError, match="for format but received 'bmp'"):
        encode(pyvips.Image.black(4, 4), "bmp", Options())
