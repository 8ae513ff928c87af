"""The `@hook` registry and the dispatch from the host's calls to the author's functions.

`@hook` runs when the plugin module is imported, and that happens while the component is
built: a misspelled hook name or a hook that does not take the event is a build error."""

import difflib
import inspect
import re
import sys
import traceback

from .errors import WardenError
from .events import Event
from .templates import Decision

# The WIT `hook` enum, in its order, as Python function names.
HOOK_NAMES = (
    "on_prompt",
    "on_request",
    "on_approve",
    "on_deny",
    "on_escalate",
    "on_deescalate",
    "after_prompt",
    "after_request",
    "after_approve",
    "after_deny",
    "after_escalate",
    "after_deescalate",
)

_registered = {}


class HookDefinitionError(WardenError):
    """A `@hook` that cannot be one: an unknown name, a wrong signature, defined twice."""


def hook(fn):
    """Marks `fn` as the plugin's hook of the same name (`on_request`, `after_approve`, ...).

    The hook takes the event and returns a decision (`ApprovalTemplate.approve(...)`,
    `.deny(...)`, `.ignore(...)`) or `None` to continue. Raising fails closed: the request
    goes to a human."""
    name = getattr(fn, "__name__", None)
    where = _where(fn)
    if name not in HOOK_NAMES:
        close = difflib.get_close_matches(str(name), HOOK_NAMES, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise HookDefinitionError(
            f"{where}: `{name}` is not a warden hook{hint}; the hooks are {', '.join(HOOK_NAMES)}"
        )
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise HookDefinitionError(
            f"{where}: hook `{name}` is async; hooks are plain functions (asyncio is not available)"
        )
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        raise HookDefinitionError(
            f"{where}: hook `{name}` must take exactly one argument, the event: `def {name}(event):`"
        ) from None
    except ValueError:
        pass  # no signature to inspect (a builtin): let the call tell
    if name in _registered:
        raise HookDefinitionError(
            f"{where}: hook `{name}` is defined twice (first at {_where(_registered[name])})"
        )
    _registered[name] = fn
    return fn


def _where(fn):
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    return f"{_display_path(code.co_filename)}:{code.co_firstlineno}"


def check_module(module):
    """Build-time checks of the author's module: it defines at least one hook, and no
    function named like a hook was left without `@hook` (it would never run)."""
    where = _display_path(getattr(module, "__file__", None) or module.__name__)
    for name in HOOK_NAMES:
        fn = getattr(module, name, None)
        if callable(fn) and _registered.get(name) is not fn:
            raise HookDefinitionError(
                f"{_where(fn)}: `{name}` is named like a hook but not marked `@hook`; add `@hook` above it"
            )
    if not _registered:
        raise HookDefinitionError(
            f"{where} defines no hook: mark a function such as `def on_request(event):` with `@hook`"
        )


def implemented():
    """The names of the hooks defined, in WIT order."""
    return [name for name in HOOK_NAMES if name in _registered]


def run(name, wit_event):
    """Runs hook `name` on the host's event; returns a `Decision`. Raises `HookFailed`
    with the Python traceback when the hook raises or returns something that is no decision."""
    fn = _registered.get(name)
    if fn is None:
        # The host only calls what `implemented` lists; this is a host bug if it happens.
        raise HookFailed(f"hook `{name}` is not implemented by this plugin")
    try:
        try:
            result = fn(Event(wit_event))
        except BaseException as error:  # noqa: BLE001 - every failure fails closed
            try:
                text = _traceback_text(name, error)
            except BaseException:  # noqa: BLE001 - the failure must still be told
                text = f"hook `{name}` raised {type(error).__name__} (its traceback cannot be shown)"
            raise HookFailed(text) from None
        if result is None:
            return Decision.CONTINUE
        if isinstance(result, Decision):
            return result
        raise HookFailed(
            f"hook `{name}` returned {_describe(result)}, not a decision: return "
            "ApprovalTemplate.approve(...), .deny(...), .ignore(...), or None to continue"
        )
    finally:
        # Whatever the hook printed last must reach the host before the instance is dropped.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream must not hide the outcome
                pass


class HookFailed(Exception):
    """The hook failed; the message is what the host records."""


def _describe(value):
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


# componentize-py mounts each python path entry as `/0/`, `/1/`, ...; the author knows
# their files by name.
_MOUNT = re.compile(r"^/\d+/")
_MOUNT_IN_TRACEBACK = re.compile(r'File "/\d+/')


def _display_path(path):
    return _MOUNT.sub("", str(path))


def _traceback_text(name, error):
    # The dispatch frame is ours, not the author's: start at the hook.
    tb = error.__traceback__.tb_next if error.__traceback__ is not None else None
    summary = traceback.TracebackException(type(error), error, tb)
    # Below the author's last frame, the SDK's own frames (/0/) only say how it raised what
    # the last line says: the author needs the line of theirs that called it.
    frames = list(summary.stack)
    while len(frames) > 1 and frames[-1].filename.startswith("/0/"):
        frames.pop()
    summary.stack = traceback.StackSummary.from_list(frames)
    text = "".join(summary.format()).rstrip()
    text = _MOUNT_IN_TRACEBACK.sub('File "', text)
    return f"hook `{name}` raised {type(error).__name__}: {_text_of(error)}\n{text}"


def _text_of(error):
    # An exception's own `__str__` may fail (or be a sealed secret's, which refuses to be
    # text): the hook's failure is still told, as Python's traceback module tells it.
    try:
        return str(error)
    except BaseException:  # noqa: BLE001
        return "<exception str() failed>"
