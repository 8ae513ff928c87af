"""Log lines the host records with the event: `warden.log.info("mapped %s", email)`.

`print()` and the standard `logging` module reach the same log (`print` as the plugin's
stdout, `logging` at its own level)."""

import logging as _logging

from wit_world.imports import log as _wit

from .secrets import plain, refuse_placeholders

_LEVELS = {
    "trace": _wit.Level.TRACE,
    "debug": _wit.Level.DEBUG,
    "info": _wit.Level.INFO,
    "warn": _wit.Level.WARN,
    "error": _wit.Level.ERROR,
}


def write(level, message, *args):
    """Log `message` (`%`-formatted with `args`, as `logging` does) at `level`: one of
    trace, debug, info, warn, error."""
    try:
        wit_level = _LEVELS[level]
    except KeyError:
        raise ValueError(f"unknown log level `{level}`; use one of {', '.join(_LEVELS)}") from None
    text = plain(message, "log it") if isinstance(message, str) else str(message)
    if args:
        text = text % args
    refuse_placeholders(text, "a log line")
    _wit.write(wit_level, text)


def trace(message, *args):
    write("trace", message, *args)


def debug(message, *args):
    write("debug", message, *args)


def info(message, *args):
    write("info", message, *args)


def warn(message, *args):
    write("warn", message, *args)


warning = warn


def error(message, *args):
    write("error", message, *args)


class Handler(_logging.Handler):
    """A `logging` handler writing to warden's log (installed on the root logger)."""

    def emit(self, record):
        if record.levelno >= _logging.ERROR:
            level = "error"
        elif record.levelno >= _logging.WARNING:
            level = "warn"
        elif record.levelno >= _logging.INFO:
            level = "info"
        else:
            level = "debug"
        try:
            write(level, self.format(record))
        except Exception:  # noqa: BLE001 - logging must not raise; say why instead
            self.handleError(record)
