"""Secrets in settings: masked wherever settings are shown, revealed only where they are used.

Passwords, tokens and keys are pydantic ``SecretStr`` (``get_secret_value()``
at the one place that sends them).  URLs are ``MaskedUrl``: a plain ``str`` to
the code, whose ``user:password@`` part is masked when dumped as JSON
(``model_dump(mode="json")``, ``model_dump_json()``), so /v1/config and the
logs of a config never carry them.  ``settings_key`` gives the identity of a
settings block with its secrets in, for grouping equal blocks (a masked dump
would make two blocks that differ only by a password look the same).
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, PlainSerializer, SecretStr

MASK = "**********"


def mask_url(url: str) -> str:
    """Url with the user and password of its authority replaced by MASK (unchanged without)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # not a URL we can take apart: show none of it
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))


class _MaskedUrlMarker:
    """Marks a field as a URL whose credentials are masked (the config walk test looks for it)."""


MASKED_URL = _MaskedUrlMarker()

MaskedUrl = Annotated[str, PlainSerializer(mask_url, when_used="json"), MASKED_URL]
"""A URL string whose ``user:password@`` is masked when the model is dumped as JSON."""


def reveal(secret: SecretStr | None) -> str | None:
    """The value of an optional secret, at the place that uses it."""
    return None if secret is None else secret.get_secret_value()


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def settings_key(settings: object, *, exclude: set[str] | None = None) -> str:
    """A key equal for two settings models exactly when their values, secrets included, are."""
    if not isinstance(settings, BaseModel):
        raise TypeError(f"expected a pydantic model, got {type(settings).__name__}")
    data = settings.model_dump(mode="python", exclude=exclude)
    return type(settings).__qualname__ + json.dumps(data, default=_plain, sort_keys=True)
