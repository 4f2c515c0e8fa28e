"""Presets: named option sets from the server's settings, used in URLs instead of options.

Two URL forms, both expanded to the preset's options before they are parsed:

    /cdn-cgi/image/avatar/a.jpg                 the preset alone
    /cdn-cgi/image/preset=avatar,format=webp/a.jpg
                                                the preset plus options; an option given in the URL
                                                replaces the preset's value of it

With ``presets_only``, the first form (or ``preset=<name>`` alone) is the only one served: free-form
options are refused with 403, so a public server renders no variants but the ones configured.

``draw=<name>`` (in a URL or a preset) stands for the ``draw`` of preset ``<name>``: overlays
are written once, in a preset, and added to any variant by name (``preset=avatar,draw=brand``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from focal.errors import ForbiddenError, OptionError, SettingsError
from focal.options import BY_KEY, parse_options, split_options

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
KEY = "preset"
DRAW = "draw"


def check(presets: Mapping[str, str]) -> None:
    """Every preset has a usable name and options that parse (else a SettingsError naming it)."""
    for name, text in presets.items():
        if NAME.fullmatch(name) is None:
            raise SettingsError(
                f"Preset name {name!r} must be lowercase letters, digits, - and _ (setting presets)"
            )
        if any(part.partition("=")[0].strip() == KEY for part in split_options(text)):
            raise SettingsError(f"Preset {name!r} names another preset (setting presets)")
        try:
            parse_options(resolve_draw(text, presets))
        except OptionError as error:
            raise SettingsError(f"Preset {name!r} (setting presets): {error.public}") from None


def _unknown(name: str, presets: Mapping[str, str]) -> OptionError:
    known = ", ".join(sorted(presets)) or "none are configured"
    return OptionError(f"Expected a preset name ({known}) for preset but received {name!r}")


def _key(part: str) -> str:
    key = part.partition("=")[0].strip()
    spec = BY_KEY.get(key)
    return spec.name if spec is not None else key


def expand(text: str, presets: Mapping[str, str], *, only: bool = False) -> str:
    """The options text with a preset replaced by its options, and ``draw=<name>`` by the draw
    of preset ``<name>`` (``text`` unchanged without either)."""
    return resolve_draw(_expand(text, presets, only=only), presets)


def resolve_draw(text: str, presets: Mapping[str, str]) -> str:
    """``draw=<name>`` replaced by the draw list of preset ``<name>`` (a 400 naming draw when no
    preset of that name has one)."""
    parts = split_options(text)
    named = [i for i, part in enumerate(parts) if _key(part) == DRAW and _draw_name(part)]
    for index in named:
        parts[index] = f"{DRAW}={_preset_draw(_draw_name(parts[index]), presets)}"
    return ",".join(parts) if named else text


def _draw_name(part: str) -> str:
    value = part.partition("=")[2].strip()
    return value if NAME.fullmatch(value) else ""


def _preset_draw(name: str, presets: Mapping[str, str]) -> str:
    having = sorted(key for key, text in presets.items() if _draw_list(text) is not None)
    draw = _draw_list(presets[name]) if name in presets else None
    if draw is None:
        known = ", ".join(having) or "none are configured"
        raise OptionError(
            f"Expected the name of a preset with a draw list ({known}) for draw but received "
            f"{name!r}"
        )
    return draw


def _draw_list(text: str) -> str | None:
    """A preset's own draw list (None without one, or when it names another preset)."""
    found = [part for part in split_options(text) if _key(part) == DRAW and not _draw_name(part)]
    return found[0].partition("=")[2].strip() if found else None


def _expand(text: str, presets: Mapping[str, str], *, only: bool = False) -> str:
    parts = split_options(text)
    if len(parts) == 1 and "=" not in parts[0] and (presets or only):
        if parts[0] not in presets:
            known = ", ".join(sorted(presets)) or "none are configured"
            raise OptionError(
                f"Expected key=value options or a preset name ({known}) for options but "
                f"received {parts[0]!r}"
            )
        return presets[parts[0]]
    named = [part for part in parts if part.partition("=")[0].strip() == KEY]
    if only and (len(parts) != 1 or len(named) != 1):
        raise ForbiddenError(
            "This server serves presets only (setting presets_only): use "
            "/cdn-cgi/image/<preset>/<source> with one of: " + (", ".join(sorted(presets)) or "-")
        )
    if not named:
        return text
    if len(named) > 1:
        both = " and ".join(named)
        raise OptionError(f"Expected a single value for preset but received {both!r}")
    name = named[0].partition("=")[2].strip()
    if name not in presets:
        raise _unknown(name, presets)
    given = [part for part in parts if part not in named]
    replaced = {_key(part) for part in given}
    kept = [part for part in split_options(presets[name]) if _key(part) not in replaced]
    return ",".join(kept + given)
