from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from focal.errors import SignatureError
from focal.server import signing

DOC = Path(__file__).resolve().parents[1] / "docs" / "signing.md"
PATH = "/cdn-cgi/image/width=256,height=256,fit=cover,gravity=face,zoom=0.5/astronaut.jpg"
# HMAC-SHA256(b"my-secret-key", PATH) in urlsafe base64 without the "=" padding, as also given by
# printf %s "$PATH" | openssl dgst -sha256 -hmac my-secret-key -binary | basenc --base64url
KNOWN = "LTElVKMNSwWe5NfAPMWZI_HRxNdg80sqCjC4LiSzuhs"


def doc_example(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)
    if len(blocks) != 1:
        pytest.fail(f"expected one {language} example in {DOC}, found {len(blocks)}")
    return str(blocks[0])


def run_example(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


def python_example_url() -> str:
    return run_example([sys.executable, "-c", doc_example("python")])


def test_known_vector() -> None:
    assert signing.sign(PATH, "my-secret-key") == KNOWN
    assert "=" not in KNOWN and "+" not in KNOWN and "/" not in KNOWN


def test_python_example_matches_the_module() -> None:
    url = python_example_url()
    assert url == signing.signed_url(PATH, "my-secret-key") == f"{PATH}?sig={KNOWN}"


def test_node_example_matches_the_module() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    assert run_example([node, "-e", doc_example("javascript")]) == f"{PATH}?sig={KNOWN}"


def test_any_configured_key_is_accepted() -> None:
    keys = ("new-key", "old-key")
    for key in keys:
        signing.check(PATH.encode(), f"sig={signing.sign(PATH, key)}", keys, required=True)


@pytest.mark.parametrize(
    ("path", "query", "words"),
    [
        (PATH, "", "missing"),
        (PATH, "sig=", "does not match"),
        (PATH, f"sig={signing.sign(PATH, 'other-key')}", "does not match"),
        (PATH.replace("256", "257", 1), f"sig={KNOWN}", "does not match"),
        (PATH, f"sig={KNOWN}&sig={KNOWN}", "several"),
        (PATH, "sig=%FF%FE", "does not match"),
    ],
)
def test_refused(path: str, query: str, words: str) -> None:
    with pytest.raises(SignatureError) as info:
        signing.check(path.encode(), query, ("my-secret-key",), required=True)
    assert words in info.value.public and info.value.status == 403


def test_unsigned_allowed_while_migrating_but_wrong_signature_is_not() -> None:
    signing.check(PATH.encode(), "", ("k",), required=False)
    with pytest.raises(SignatureError):
        signing.check(PATH.encode(), "sig=AAAA", ("k",), required=False)


def test_no_keys_means_no_check() -> None:
    signing.check(PATH.encode(), "sig=whatever", (), required=True)


def test_signature_covers_the_encoded_bytes() -> None:
    encoded = "/cdn-cgi/image/width=10/a%20b.jpg"
    assert signing.sign(encoded, "k") != signing.sign("/cdn-cgi/image/width=10/a b.jpg", "k")
