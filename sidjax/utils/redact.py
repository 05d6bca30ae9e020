"""Redact API keys and Authorization headers from text before it is logged, raised or saved.

A teacher server's error body may echo the request's headers (`Authorization: Bearer sk-...`);
such text must never reach a log, an exception message or a file in the workdir.
"""
from __future__ import annotations

import re
from typing import Iterable

REDACTED = "[REDACTED]"

_PATTERNS = (
    # "Authorization: Bearer xyz", "authorization": "Basic xyz", Authorization=xyz: everything after the name.
    re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"),
    # api_key=xyz, "api-key": "xyz", x-api-key: xyz
    re.compile(r"(?i)(\b(?:x-)?api[-_]?key\b[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+"),
    # Key-shaped tokens: OpenAI-style sk-..., and similar prefixed secrets.
    re.compile(r"()\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every given secret value, key-shaped token and Authorization / api-key value replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def looks_like_secret(value: str) -> bool:
    """Whether `value` looks like a key itself (sk-..., or a long random token) rather than a name."""
    if redact(value) != value:
        return True
    return len(value) >= 32 and any(c.isdigit() for c in value) and any(c.islower() for c in value)
