"""The part of the `requests` library that hooks use, sent through warden's `http`
capability: the flow's `allowed_hosts`, limits and every other rule apply, and a secret's
value put as it is into a header is sent sealed.

    response = requests.get(url, headers={"X-Api-Key": token}, params={"q": "x"}, timeout=5)
    response.raise_for_status()
    body = response.json()

`get`, `post`, `put`, `patch`, `delete`, `head`, `options` and `request` take `params`,
`headers`, `json`, `data` and `timeout`. Not supported: sessions, `auth`, `cookies`, `files`,
streaming, `verify=False`, `allow_redirects=False` (warden follows redirects itself, checking
each hop against `allowed_hosts`). Errors are `RequestException` subclasses.
"""

import datetime
import http
import json as _json
import math
import time
import urllib.parse
from collections.abc import Mapping

from warden._host import call
from warden.secrets import SecretValue, plain, refuse_placeholders
from wit_world.imports import http as _wit

from . import exceptions
from .exceptions import (
    ConnectionError,
    ConnectTimeout,
    DestinationDenied,
    HTTPError,
    InvalidHeader,
    InvalidJSONError,
    InvalidRequest,
    InvalidURL,
    JSONDecodeError,
    ReadTimeout,
    RequestException,
    ResponseTooLarge,
    Timeout,
    TooManyRedirects,
)
from .structures import CaseInsensitiveDict

__all__ = [
    "ConnectTimeout",
    "ConnectionError",
    "DestinationDenied",
    "HTTPError",
    "InvalidHeader",
    "InvalidJSONError",
    "InvalidRequest",
    "InvalidURL",
    "JSONDecodeError",
    "ReadTimeout",
    "RequestException",
    "Response",
    "ResponseTooLarge",
    "Timeout",
    "TooManyRedirects",
    "delete",
    "exceptions",
    "get",
    "head",
    "options",
    "patch",
    "post",
    "put",
    "request",
]

__version__ = "2.32.0+warden"

# The keyword arguments of the library that only have one meaning here.
_FIXED = {"allow_redirects": True, "verify": True, "stream": False}


def request(method, url, params=None, data=None, headers=None, json=None, timeout=None, **kwargs):
    """Send a request; any status is a `Response` (check `.ok` or `raise_for_status()`).
    Raises a `RequestException` subclass when there is no response."""
    for name, value in kwargs.items():
        if name not in _FIXED:
            raise TypeError(f"warden's requests does not support the `{name}` argument")
        if value != _FIXED[name]:
            raise TypeError(
                f"warden's requests only supports {name}={_FIXED[name]!r} "
                "(redirects are followed by the host, hop by hop, within allowed_hosts)"
            )
    wit_method = _method(method)
    if not isinstance(url, str):
        raise InvalidURL(f"the URL must be a str, not {type(url).__name__}")
    url = plain(url, "put it in a URL")
    refuse_placeholders(url, "the URL")
    if isinstance(params, (str, bytes)):
        # As `requests` does: a query written out is sent as written (VictorOps wants an
        # email's `@` as it is, which encoding pairs would send as `%40`).
        text = params.decode("utf-8") if isinstance(params, bytes) else plain(params, "put it in a URL")
        refuse_placeholders(text, "the query")
        if text:
            url = f"{url}{'&' if '?' in url else '?'}{text}"
        query = []
    else:
        query = _query(params)
    wit_headers, names = _headers(headers)
    body = None
    if data is not None and not (isinstance(data, (dict, list, tuple)) and not data):
        body, content_type = _data(data)
        if content_type and "content-type" not in names:
            wit_headers.append(("Content-Type", _wit.HeaderValue_Text(content_type)))
    elif json is not None:
        try:
            body = _json.dumps(_plain_json(json), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise InvalidJSONError(f"the json argument cannot be sent as JSON: {error}") from None
        if "content-type" not in names:
            wit_headers.append(("Content-Type", _wit.HeaderValue_Text("application/json")))
    if body is not None:
        refuse_placeholders(body, "the request body")
    shown_url = _with_query(url, query)
    wit_request = _wit.Request(
        method=wit_method,
        url=url,
        query=query,
        headers=wit_headers,
        body=body,
        timeout_ms=_timeout_ms(timeout),
    )
    started = time.monotonic()
    answer, error = call(_wit.send, wit_request)
    if error is not None:
        raise _error(error, method, shown_url)
    return Response(answer, shown_url, datetime.timedelta(seconds=time.monotonic() - started))


def get(url, params=None, **kwargs):
    """`GET url`."""
    return request("GET", url, params=params, **kwargs)


def head(url, **kwargs):
    return request("HEAD", url, **kwargs)


def options(url, **kwargs):
    return request("OPTIONS", url, **kwargs)


def post(url, data=None, json=None, **kwargs):
    return request("POST", url, data=data, json=json, **kwargs)


def put(url, data=None, **kwargs):
    return request("PUT", url, data=data, **kwargs)


def patch(url, data=None, **kwargs):
    return request("PATCH", url, data=data, **kwargs)


def delete(url, **kwargs):
    return request("DELETE", url, **kwargs)


# Status phrases by code, looked up once at build time: `http.HTTPStatus(code)` runs enum's
# Python-level machinery, which a fresh instance per event would run cold on every answer.
_REASONS = {status.value: status.phrase for status in http.HTTPStatus}


# The WIT methods by name, made at build time (`Method[name]` is enum's Python-level lookup).
_METHODS = {method.name: method for method in _wit.Method}


class Response:
    """An answer, of any status."""

    def __init__(self, answer, url, elapsed):
        self.status_code = answer.status
        self.headers = CaseInsensitiveDict._joined(answer.headers)
        self.content = bytes(answer.body)
        self.url = url
        self.elapsed = elapsed

    def __getattr__(self, name):
        # `reason` and `encoding` are made when first read (most hooks read neither); from then
        # on they are plain attributes, which a hook may set, as in `requests`.
        if name == "reason":
            value = _REASONS.get(self.status_code, "")
        elif name == "encoding":
            value = _charset(self.headers.get("content-type", ""))
        else:
            raise AttributeError(f"'Response' object has no attribute '{name}'")
        setattr(self, name, value)
        return value

    @property
    def ok(self):
        """False for 4xx and 5xx statuses, as in `requests`: whether `raise_for_status`
        would not raise."""
        return not 400 <= self.status_code < 600

    @property
    def text(self):
        """The body decoded (the charset of Content-Type, else UTF-8; undecodable bytes
        replaced)."""
        try:
            return self.content.decode(self.encoding or "utf-8", errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self, **kwargs):
        """The body parsed as JSON; `requests.JSONDecodeError` when it is not JSON."""
        try:
            return _json.loads(self.text, **kwargs)
        except _json.JSONDecodeError as error:
            raise JSONDecodeError(error.msg, error.doc, error.pos, response=self) from None

    def raise_for_status(self):
        """Raises `HTTPError` for a 4xx or 5xx status."""
        if 400 <= self.status_code < 500:
            kind = "Client Error"
        elif 500 <= self.status_code < 600:
            kind = "Server Error"
        else:
            return
        raise HTTPError(
            f"{self.status_code} {kind}: {self.reason} for url: {self.url}", response=self
        )

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return f"<Response [{self.status_code}]>"


def _method(method):
    if not isinstance(method, str):
        raise TypeError(f"the method must be a str, not {type(method).__name__}")
    found = _METHODS.get(method.upper())
    if found is None:
        raise InvalidRequest(f"unsupported HTTP method `{method}`")
    return found


def _text(value, what):
    """A query or form value as text, as `requests` sends it."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8")
    elif not isinstance(value, str):
        value = str(value)
    value = plain(value, f"put it in {what}")
    refuse_placeholders(value, what)
    return value


def _pairs(values, what):
    if isinstance(values, Mapping):
        items = values.items()
    else:
        items = list(values)
    pairs = []
    for key, value in items:
        if value is None:
            continue
        many = value if isinstance(value, (list, tuple)) else [value]
        for one in many:
            if one is not None:
                pairs.append((_text(key, what), _text(one, what)))
    return pairs


def _query(params):
    if params is None:
        return []
    return _pairs(params, "the query")


def _with_query(url, query):
    if not query:
        return url
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}{urllib.parse.urlencode(query)}"


def _headers(headers):
    wit_headers = []
    names = set()
    for name, value in (headers or {}).items():
        if value is None:
            continue
        if not isinstance(name, str):
            raise InvalidHeader(f"header names are str, not {type(name).__name__}")
        if isinstance(value, SecretValue):
            # The whole value is the secret's: the host fills it in, the plugin never sees it.
            header = _wit.HeaderValue_Sealed(value.secret._handle)
        elif isinstance(value, (str, bytes)):
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            text = plain(text, f"put it in header {name}")
            refuse_placeholders(text, f"header `{name}`")
            header = _wit.HeaderValue_Text(text)
        else:
            raise InvalidHeader(
                f"header `{name}`: the value must be str or bytes, not {type(value).__name__}"
            )
        wit_headers.append((name, header))
        names.add(name.lower())
    return wit_headers, names


def _data(data):
    if isinstance(data, (bytes, bytearray)):
        return bytes(data), None
    if isinstance(data, str):
        return plain(data, "send it as the body").encode("utf-8"), None
    if isinstance(data, Mapping) or isinstance(data, (list, tuple)):
        body = urllib.parse.urlencode(_pairs(data, "the form body"))
        return body.encode("utf-8"), "application/x-www-form-urlencoded"
    raise TypeError(
        f"warden's requests sends data as bytes, str, a dict or a list of pairs, not {type(data).__name__}"
    )


def _plain_json(value):
    """`value` with every secret's value in place of its `SecretValue` (which needs a flow
    that reveals secrets), so `json.dumps` sees the text and not a placeholder."""
    if isinstance(value, str):
        return plain(value, "send it in a JSON body")
    if isinstance(value, Mapping):
        return {_plain_json(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    return value


def _timeout_ms(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, tuple):
        # (connect, read): the host has one deadline per request, their sum.
        parts = [t for t in timeout if t is not None]
        if not parts:
            return None
        timeout = sum(parts)
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")
    return min(2**32 - 1, max(1, math.ceil(timeout * 1000)))


def _charset(content_type):
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip('"')
    return None


def _error(error, method, url):
    detail = error.value
    if isinstance(error, _wit.HttpError_Denied):
        return DestinationDenied(f"{method} {url}: denied: {detail}")
    if isinstance(error, _wit.HttpError_Timeout):
        return ReadTimeout(f"{method} {url}: timeout: {detail}")
    if isinstance(error, _wit.HttpError_Connect):
        return ConnectionError(f"{method} {url}: connect: {detail}")
    if isinstance(error, _wit.HttpError_TooLarge):
        return ResponseTooLarge(f"{method} {url}: too-large: {detail}")
    return InvalidRequest(f"{method} {url}: invalid: {detail}")
