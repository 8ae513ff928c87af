"""The errors of warden's `requests`: the same names as the `requests` library's, and
three of warden's own for what the sandbox refuses."""

import json


class RequestException(IOError):
    """Any failure of a request. `.request` is None; `.response` is set for `HTTPError`."""

    def __init__(self, *args, response=None, request=None):
        super().__init__(*args)
        self.response = response
        self.request = request


class HTTPError(RequestException):
    """`raise_for_status()` on a 4xx or 5xx answer."""


class ConnectionError(RequestException):  # noqa: A001 - the library's name
    """The destination could not be reached."""


class Timeout(RequestException):
    """No answer in time: the request's `timeout`, or the flow's limits."""


class ConnectTimeout(ConnectionError, Timeout):
    """Kept for code that catches it; warden reports every timeout as `ReadTimeout`."""


class ReadTimeout(Timeout):
    """No answer in time."""


class TooManyRedirects(RequestException):
    pass


class InvalidURL(RequestException, ValueError):
    pass


class InvalidHeader(RequestException, ValueError):
    pass


class InvalidJSONError(RequestException):
    pass


class JSONDecodeError(InvalidJSONError, json.JSONDecodeError):
    """`Response.json()` on a body that is not JSON."""

    def __init__(self, *args, **kwargs):
        json.JSONDecodeError.__init__(self, *args)
        InvalidJSONError.__init__(self, *self.args, **kwargs)

    def __reduce__(self):
        return JSONDecodeError, (self.msg, self.doc, self.pos)


class DestinationDenied(RequestException):
    """warden's own: the flow's `allowed_hosts` (or another rule of the sandbox) does not
    allow this destination. Retrying does not help."""


class ResponseTooLarge(RequestException):
    """warden's own: the answer's body is over the flow's `response_max_bytes`."""


class InvalidRequest(RequestException, ValueError):
    """warden's own: the host refused the request as malformed."""
