"""Calling the host's imports."""

from componentize_py_types import Err


def call(function, *args):
    """`function(*args)` as `(result, None)`, or `(None, error)` with the error the host
    answered (the `Err`'s value). The caller raises its own exception outside the `except`,
    so the `Err`, a frozen dataclass, is not its context: tools that rewrite an exception
    chain's tracebacks (unittest does) cannot set attributes on it."""
    try:
        return function(*args), None
    except Err as error:
        return None, error.value
