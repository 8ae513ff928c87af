"""A small key-value cache per flow: values outlive one event, never cross flows, and may
be evicted at any time.

    roster = warden.cache.get_json("roster")
    if roster is None:
        roster = fetch_roster()
        warden.cache.set_json("roster", roster, ttl_seconds=60)
"""

import json
import math

from wit_world.imports import cache as _wit

from ._host import call
from .errors import CacheError
from .secrets import plain, refuse_placeholders


def _key(key):
    if not isinstance(key, str):
        raise TypeError(f"cache keys are str, not {type(key).__name__}")
    key = plain(key, "use it as a cache key")
    refuse_placeholders(key, "a cache key")
    return key


def get(key):
    """The bytes cached under `key`, or None."""
    return _wit.get(_key(key))


def set(key, value, ttl_seconds):  # noqa: A001 - the name the host's interface uses
    """Keep `value` (bytes, or str as UTF-8) under `key` for `ttl_seconds` (rounded up to
    whole seconds). Raises `CacheError` when the key or value is over the host's caps."""
    if isinstance(value, str):
        value = plain(value, "cache it").encode("utf-8")
    value = bytes(value)
    refuse_placeholders(value, "a cached value")
    ttl = max(0, min(2**32 - 1, math.ceil(ttl_seconds)))
    _, error = call(_wit.set, _key(key), value, ttl)
    if error is not None:
        raise CacheError(str(error))


def delete(key):
    """Forget `key`."""
    _wit.delete(_key(key))


def get_json(key):
    """The JSON value cached under `key`, or None."""
    raw = get(key)
    return None if raw is None else json.loads(raw)


def set_json(key, value, ttl_seconds):
    """Keep `value` as JSON under `key` for `ttl_seconds`."""
    set(key, json.dumps(value, separators=(",", ":")).encode("utf-8"), ttl_seconds)
