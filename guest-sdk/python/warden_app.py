"""The entry module componentize-py builds a warden Python plugin from: it implements the
`warden:plugin/hooks` exports by calling the author's `@hook` functions in `plugin.py`.

Everything here runs while the component is built, and the interpreter's state is
snapshotted into it: a module imported now exists at run time, any other does not. Hence the
curated standard library below, imported whether the plugin uses it or not, and the author's
module imported here, so that its mistakes (a syntax error, an unknown import, a misspelled
hook) are build errors.
"""

# The standard library a hook may import (docs/plugin-authors.md lists it).
import base64  # noqa: F401
import collections  # noqa: F401
import csv  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import enum  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import hmac  # noqa: F401
import itertools  # noqa: F401
import json  # noqa: F401
import logging
import math  # noqa: F401
import operator  # noqa: F401
import random  # noqa: F401
import re  # noqa: F401
import secrets  # noqa: F401
import string  # noqa: F401
import textwrap  # noqa: F401
import time  # noqa: F401
import typing  # noqa: F401
import urllib.parse  # noqa: F401
import uuid  # noqa: F401
import zoneinfo  # noqa: F401

import requests  # noqa: F401 - warden's, over the http capability
import warden
from warden import _hooks
from warden.templates import Decision
from wit_world import exports
from wit_world.imports import types

# `logging` reaches warden's log too, from INFO up unless the plugin sets another level.
_root = logging.getLogger()
_root.addHandler(warden.log.Handler())
_root.setLevel(logging.INFO)

import plugin  # noqa: E402 - the author's module, after the SDK is ready

_hooks.check_module(plugin)


def _keep_sources():
    """Keeps the source of the SDK's and the author's modules in `linecache`, so that a
    traceback at run time, when no file can be read, still shows each line."""
    import linecache
    import sys

    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        # componentize-py mounts the python path as /0/ (the SDK) and /1/ (the plugin).
        if not (path.startswith(("/0/", "/1/")) and path.endswith(".py")):
            continue
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except OSError:
            continue
        # No modification time: linecache never checks (and drops) such an entry.
        linecache.cache[path] = (len(text), None, text.splitlines(True), path)


_keep_sources()

_WIT_DECISIONS = {
    "continue": lambda reason: types.Decision_Continue(),
    "approve": types.Decision_Approve,
    "deny": types.Decision_Deny,
    "ignore": types.Decision_Ignore,
}


def _run(name, event):
    from componentize_py_types import Err

    try:
        decision = _hooks.run(name, event)
    except _hooks.HookFailed as failed:
        raise Err(str(failed)) from None
    except BaseException as error:  # noqa: BLE001 - an SDK failure fails closed, told as one
        raise Err(f"hook `{name}` failed in the SDK: {type(error).__name__}") from None
    assert isinstance(decision, Decision)
    return _WIT_DECISIONS[decision.kind](decision.reason)


class Hooks(exports.Hooks):
    def implemented(self):
        return [types.Hook[name.upper()] for name in _hooks.implemented()]

    def on_prompt(self, event):
        return _run("on_prompt", event)

    def on_request(self, event):
        return _run("on_request", event)

    def on_approve(self, event):
        return _run("on_approve", event)

    def on_deny(self, event):
        return _run("on_deny", event)

    def on_escalate(self, event):
        return _run("on_escalate", event)

    def on_deescalate(self, event):
        return _run("on_deescalate", event)

    def after_prompt(self, event):
        return _run("after_prompt", event)

    def after_request(self, event):
        return _run("after_request", event)

    def after_approve(self, event):
        return _run("after_approve", event)

    def after_deny(self, event):
        return _run("after_deny", event)

    def after_escalate(self, event):
        return _run("after_escalate", event)

    def after_deescalate(self, event):
        return _run("after_deescalate", event)
