"""The parts of the composition root that decide alone: the Origin policy of the upgrade."""

from __future__ import annotations

import pytest

from gogate.server import OriginPolicy

# --- OriginPolicy --------------------------------------------------------------------------


@pytest.mark.parametrize(("patterns", "origin", "allowed"), [
    ((), "https://anything.example", True),
    ((), None, True),
    (("https://app.example.com",), "https://app.example.com", True),
    (("https://app.example.com",), "https://APP.Example.COM", True),
    (("HTTPS://App.Example.com",), "https://app.example.com", True),
    (("https://app.example.com",), "http://app.example.com", False),
    (("https://app.example.com",), "https://app.example.com:8443", False),
    (("https://app.example.com",), "https://app.example.com.evil.com", False),
    (("https://app.example.com",), "https://evil.com", False),
    (("https://app.example.com",), "null", False),
    (("https://app.example.com",), None, True),
    (("https://app.example.com",), "https://appXexample.com", False),
    (("https://*.example.com",), "https://a.example.com", True),
    (("https://*.example.com",), "https://a.b.example.com", True),
    (("https://*.example.com",), "https://A.EXAMPLE.com", True),
    (("https://*.example.com",), "https://example.com", False),
    (("https://*.example.com",), "https://evil.com/.example.com", False),
    (("https://*.example.com",), "https://evilexample.com", False),
    (("https://*.example.com",), "https://a.example.com.evil.com", False),
    (("https://*.example.com",), "http://a.example.com", False),
    (("https://a.com", "https://*.b.com"), "https://a.com", True),
    (("https://a.com", "https://*.b.com"), "https://x.b.com", True),
    (("https://a.com", "https://*.b.com"), "https://b.com", False),
    (("https://a.com", "https://*.b.com"), "https://a.com.b.co", False),
    # a lone "*" is the wildcard for every origin (ALLOWED_ORIGINS=*)
    (("*",), "https://a.com", True),
    (("*",), "http://localhost:3000", True),
])
def test_origin_policy(patterns: tuple[str, ...], origin: str | None, allowed: bool) -> None:
    assert OriginPolicy(patterns).allows(origin) is allowed
