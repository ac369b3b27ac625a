"""Credentials out of everything that is logged, printed or stored: URL ``user:password@``, secret-looking query
parameters and keys, ``Bearer`` tokens. Pure stdlib, at the bottom layer so that every layer (the Store as the
last line of defence, the OpenAI client, the CLI) can use the same rules."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
# Key names whose values are secrets: api_key, apiKey, x-api-key, access_token, token, client_secret, password,
# Authorization, credentials, private_key. Whole names only, so "max_new_tokens" or "prompt_tokens" are left alone.
SECRET_KEY = re.compile(r"(?i)^(?:[a-z0-9]+[_-])*(?:api[_-]?key|apikey|access[_-]?key|secret[_-]?key|token|secret|"
                        r"passw(?:or)?d|authorization|credentials?|private[_-]?key)$")
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#@\s'\"<>]+)@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:[a-z0-9]+[_-])*(?:api[_-]?key|apikey|key|access[_-]?token|token|secret|"
                           r"password|sig|signature)=)[^&#\s'\"]+")
_ASSIGNED = re.compile(r"(?i)\b((?:[a-z0-9]+[_-])*(?:api[_-]?key|apikey|token|secret|passw(?:or)?d)[\"']?\s*[=:]\s*[\"']?)"
                       r"[^\s&,;'\"]+")  # api_key=..., "password": "...", token: ...
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")  # OpenAI-style keys pasted anywhere


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """(URL without ``user:password@``, user, password); user and password are percent-decoded."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None, None
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    if user == MASK:  # a stored, already redacted URL: there is nothing to use
        return urlunsplit(parts._replace(netloc=host)), None, None
    return urlunsplit(parts._replace(netloc=host)), unquote(user) or None, unquote(password) if password else None


def redact_url(url: str) -> str:
    """``http://user:pw@host/v1?api_key=x`` → ``http://***@host/v1?api_key=***``; other URLs unchanged."""
    if not isinstance(url, str) or not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        secret = lambda k: SECRET_KEY.match(k) or k.lower() in ("key", "sig", "signature")  # noqa: E731
        if any(secret(k) for k, _ in pairs):
            query = urlencode([(k, MASK if secret(k) else v) for k, v in pairs], safe="*", quote_via=quote)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    """Every credential-looking part of free text (an error message, a log line) masked."""
    if not isinstance(text, str) or not text:
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _ASSIGNED.sub(lambda m: m.group(1) + MASK, text)
    return _KEYLIKE.sub(MASK, text)


def redact_obj(value: Any) -> Any:
    """A JSON-like value with secret-named keys masked and every string passed through ``redact_text``."""
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_KEY.match(k) and v not in (None, "")
                    else redact_obj(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_obj(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_json(text: str | None) -> str | None:
    """Stored JSON text redacted; text that is not JSON is redacted as plain text."""
    if not text:
        return text
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return redact_text(text)
    clean = redact_obj(data)
    return text if clean == data else json.dumps(clean)
