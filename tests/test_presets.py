"""Presets (settings forms, expansion, only-presets mode) and client hints, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from focal.errors import ForbiddenError, OptionError
from focal.options import parse_options
from focal.presets import check, expand
from focal.server import hints
from focal.server.settings import SettingsError, load

AVATAR = "width=256,height=256,fit=cover,gravity=face,zoom=0.6"
PRESETS = {"avatar": AVATAR, "thumb": "width=100"}


def test_presets_from_the_config_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "focal.toml"
    config.write_text(f'presets = {{avatar = "{AVATAR}"}}\npresets_only = true\n')
    settings = load(config=config, environ={})
    assert dict(settings.presets) == {"avatar": AVATAR} and settings.presets_only
    env = load(environ={"FOCAL_PRESETS": '{"thumb": "width=100"}'})
    assert dict(env.presets) == {"thumb": "width=100"} and not env.presets_only
    with pytest.raises(SettingsError, match="JSON object of strings for presets"):
        load(environ={"FOCAL_PRESETS": "thumb=width=100"})
    config.write_text("presets = {thumb = 100}\n")
    with pytest.raises(SettingsError, match="table of strings for presets"):
        load(config=config, environ={})


def test_presets_are_checked_when_the_server_starts() -> None:
    check(PRESETS)
    with pytest.raises(SettingsError, match="'Bad Name'"):
        check({"Bad Name": "width=1"})
    with pytest.raises(SettingsError, match=r"Preset 'x'.*for width"):
        check({"x": "width=0"})
    with pytest.raises(SettingsError, match="names another preset"):
        check({"x": "preset=y"})


def test_expansion() -> None:
    assert expand("avatar", PRESETS) == AVATAR
    assert parse_options(expand("preset=avatar,width=128,f=webp", PRESETS)) == parse_options(
        "width=128,height=256,fit=cover,gravity=face,zoom=0.6,format=webp"
    )
    assert expand("width=5", PRESETS) == "width=5"
    assert expand("width", {}) == "width"  # no presets: parse_options gives its own error
    with pytest.raises(OptionError, match=r"preset name \(avatar, thumb\)"):
        expand("nosuch", PRESETS)
    with pytest.raises(OptionError, match="single value for preset"):
        expand("preset=avatar,preset=thumb", PRESETS)


def test_presets_only() -> None:
    assert expand("avatar", PRESETS, only=True) == AVATAR
    assert expand("preset=thumb", PRESETS, only=True) == "width=100"
    for text in ("width=100", "preset=avatar,width=100", "blur=3"):
        rule = r"presets only \(setting presets_only\)"
        with pytest.raises(ForbiddenError, match=rule) as raised:
            expand(text, PRESETS, only=True)
        assert raised.value.status == 403


def test_width_auto_from_hints() -> None:
    options = parse_options("width=auto")
    # rounded up to a breakpoint (hints.AUTO_WIDTHS)
    assert hints.resolve(options, {"sec-ch-width": "640"})[0].width == 768
    assert hints.resolve(options, {"width": "300"})[0].width == 320
    assert hints.resolve(options, {"viewport-width": "400", "dpr": "1.5"})[0].width == 768
    assert hints.resolve(parse_options("width=auto,dpr=2"), {"sec-ch-width": "640"})[0].width == 384
    assert hints.resolve(options, {"sec-ch-width": "99999"})[0].width == 3840
    assert hints.resolve(options, {"sec-ch-width": "1201"})[0].width == 1600
    resolved, vary = hints.resolve(options, {"sec-ch-width": "nan"})
    assert resolved.width is None and not resolved.width_auto and "Sec-CH-Width" in vary
    assert hints.resolve(parse_options("width=10"), {"sec-ch-width": "640"}) == (
        parse_options("width=10"),
        (),
    )


def test_width_auto_makes_few_widths() -> None:
    options = parse_options("width=auto")
    widths = {hints.resolve(options, {"sec-ch-width": str(w)})[0].width for w in range(1, 13000)}
    assert widths == set(hints.AUTO_WIDTHS)


def test_a_width_past_the_source_is_clamped_under_scale_down_only() -> None:
    assert hints.clamp_to_source(parse_options("width=3840"), 512).width == 512
    assert hints.clamp_to_source(parse_options("width=3840,dpr=2"), 511).width == 256
    assert hints.clamp_to_source(parse_options("width=320"), 512).width == 320
    assert hints.clamp_to_source(parse_options("width=3840,fit=cover"), 512).width == 3840
    assert hints.clamp_to_source(parse_options("width=3840,fit=pad"), 512).width == 3840


@pytest.mark.parametrize(
    ("headers", "slow"),
    [
        ({"save-data": "on"}, True),
        ({"ect": "2g"}, True),
        ({"ect": "slow-2g"}, True),
        ({"rtt": "151"}, True),
        ({"downlink": "4.9"}, True),
        ({"save-data": "off", "ect": "4g", "rtt": "150", "downlink": "5"}, False),
        ({}, False),
    ],
)
def test_slow_connection_quality(headers: dict[str, str], slow: bool) -> None:
    options, vary = hints.resolve(parse_options("quality=80,scq=30"), headers)
    assert options.quality == (30 if slow else 80)
    assert vary == ("Save-Data", "ECT", "RTT", "Downlink")


def test_hints_that_are_not_short_ascii_numbers_are_ignored() -> None:
    options = parse_options("width=auto")
    for value in ("\uff16\uff14\uff10", "1" * 40, "-5", "inf", "abc"):
        assert hints.resolve(options, {"sec-ch-width": value})[0].width is None, value
