"""Building (and signing) focal URLs: ``focal.url(source, options, key=...)``.

    >>> url("astronaut.jpg", {"width": 256, "height": 256, "fit": "cover", "gravity": "face"})
    '/cdn-cgi/image/width=256,height=256,fit=cover,gravity=face/astronaut.jpg'
    >>> url("a.jpg", preset="avatar", base="https://img.example.com")
    'https://img.example.com/cdn-cgi/image/avatar/a.jpg'

Options are written in the order given; values are percent-encoded where a URL needs it (``#`` in
a colour becomes ``%23``); ``True``/``False`` become ``true``/``false``; a list (``draw``'s
overlays, Cloudflare's objects) becomes ``b64:`` and its JSON in base64url. The options are checked
with the server's own parser, so a URL this builds is never refused for a malformed option.
With ``key``, the path is signed (HMAC-SHA256, docs/signing.md) and ``?sig=`` appended. The
same builder for JavaScript is js/index.js.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, unquote

from focal.errors import expected
from focal.options import draw_b64, parse_options
from focal.server.signing import signed_url

PREFIX = "/cdn-cgi/image/"
VALUE_SAFE = ";:()!*'~"  # kept as they are inside a value; '#', '%', '/', ',' ... are encoded


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return draw_b64(list(value))
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    # commas are only kept inside parentheses (rgb(1,2,3)), where the parser allows them
    return quote(text, safe=VALUE_SAFE + ("," if "(" in text else ""))


def options_text(options: Mapping[str, object] | str | None) -> str:
    if options is None:
        return ""
    if isinstance(options, str):
        return options
    return ",".join(f"{key}={_value(value)}" for key, value in options.items())


def source_path(source: str) -> str:
    """A remote URL as it is (it already is a URL); a local path relative to the root, with the
    characters a path cannot carry percent-encoded."""
    if source.lower().startswith(("http://", "https://")):
        return source
    return quote(source.lstrip("/"), safe="/!$&'()*+,;=:@~")


def url(
    source: str,
    options: Mapping[str, object] | str | None = None,
    *,
    preset: str | None = None,
    key: str | None = None,
    base: str = "",
) -> str:
    """The URL of ``source`` under ``options`` (a mapping or ``width=256,...`` text) and/or a
    ``preset``, signed with ``key`` when given, prefixed with ``base`` (scheme and host)."""
    text = options_text(options)
    if preset is not None:
        text = preset if not text else f"preset={preset},{text}"
    elif not text:
        raise expected("options", "options or a preset (focal.url needs one)", text)
    else:
        parse_options(unquote(text))  # an OptionError names the option, as the server would
    path = PREFIX + text + "/" + source_path(source)
    if key is not None:
        path = signed_url(path, key)
    return base.rstrip("/") + path
