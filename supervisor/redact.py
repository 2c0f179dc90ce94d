"""Secrets out of everything docsuper prints or stores for people to read.

One function, `redact(text)`, used by every surface: the CLI's error lines,
`docsuper config`, the log (every string field of every record), the job's
stored error and what `status`, `list` and `show` print of a job's source.
It masks, wherever they appear in the text:

- the password of any URL's user-info (`postgresql://user:***@host/db`); the
  whole user-info of other URLs (`https://***@host/…`), which is a token there;
- secret-looking query values (`?password=`, `token=`, `sig=`, `apikey=`, …):
  signed storage URLs carry their credential in the query;
- libpq key/value passwords (`host=db password=***`);
- bearer tokens (`Authorization: Bearer ***`, `apikey: ***`) and JSON Web
  Tokens wherever they stand (Supabase keys are JWTs);
- any value registered with `remember(secret)` (the queue's password, the
  download token), however it was quoted.

Standard library only: the child imports it too.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

MASK = "***"

# Query keys whose values are credentials (compared lowercased, without - and _).
_SECRET_WORDS = ("pass", "pwd", "token", "secret", "key", "sig", "auth", "credential", "session")
# Keys of JSON values (a job's options, for one) whose values are credentials whatever they look like.
_SECRET_FIELDS = ("password", "passwd", "secret", "token", "apikey", "authorization", "credential", "privatekey")

# Greedy up to the last @ before the path: a password may hold an unescaped @.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s\"'<>]*)@")
_QUERY_PARAM = re.compile(r"(?P<sep>[?&;])(?P<key>[A-Za-z0-9_.\-]+)=(?P<value>[^&#\s\"'<>]*)")
_CONNINFO_PASSWORD = re.compile(r"\b(?P<key>password|sslpassword)\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'|[^\s'\"]+)",
                                re.IGNORECASE)
_BEARER = re.compile(r"\b(?P<kind>Bearer|Basic|Token)\s+(?P<value>[A-Za-z0-9._~+/=-]{4,})", re.IGNORECASE)
_HEADER = re.compile(r"\b(?P<key>apikey|api-key|x-api-key|authorization)(?P<sep>[\"']?\s*[:=]\s*[\"']?)"
                     r"(?P<value>(?!Bearer\b|Basic\b|Token\b)[A-Za-z0-9._~+/=-]{4,})", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")

_remembered: set[str] = set()


def remember(secret: str | None) -> None:
    """Mask this exact value wherever it appears from now on (too short a value is ignored:
    masking every "a" would garble the text and hide nothing)."""
    if secret and len(secret) >= 4:
        _remembered.add(secret)
        decoded = unquote(secret)
        if decoded != secret:
            _remembered.add(decoded)


def _is_secret_key(key: str) -> bool:
    flat = key.lower().replace("-", "").replace("_", "")
    return any(word in flat for word in _SECRET_WORDS)


def _is_secret_field(key: Any) -> bool:
    flat = str(key).lower().replace("-", "").replace("_", "")
    return any(word in flat for word in _SECRET_FIELDS)


def _userinfo(match: re.Match[str]) -> str:
    scheme, userinfo = match["scheme"], match["userinfo"]
    if scheme.lower().startswith(("postgres", "sqlite")):
        user, colon, _password = userinfo.partition(":")
        # The user name says which role failed to log in; the password is the secret.
        return f"{scheme}{user}:{MASK}@" if colon else f"{scheme}{userinfo}@"
    return f"{scheme}{MASK}@"


def _query(match: re.Match[str]) -> str:
    if _is_secret_key(match["key"]) and match["value"]:
        return f"{match['sep']}{match['key']}={MASK}"
    return match[0]


def redact(text: str) -> str:
    """`text` with every credential docsuper can recognise replaced by ***."""
    if not text:
        return text
    for secret in sorted(_remembered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = _URL_USERINFO.sub(_userinfo, text)
    if "=" in text:
        text = _QUERY_PARAM.sub(_query, text)
        text = _CONNINFO_PASSWORD.sub(lambda m: f"{m['key']}={MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['kind']} {MASK}", text)
    text = _HEADER.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)
    return _JWT.sub(MASK, text)



def redact_value(value: Any) -> Any:
    """Every string inside a JSON-like value redacted (dicts, lists, tuples), and the whole value of a
    key named like a credential (`api_key`, `password`, `token`); numbers as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: MASK if _is_secret_field(key) and isinstance(item, str) and item else redact_value(item)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(item) for item in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(str(value))  # what json.dumps(default=str) would have printed
