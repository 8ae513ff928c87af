"""Secrets of the flow environment's integrations, usable without holding their values.

`integration.settings["secrets"][0].retrieve_value()` returns a `SecretValue`: a `str`
subclass that does not hold the secret. Put as it is into a `requests` header it is sent
*sealed*: the host fills the value in, so the plugin never sees it, and that works in a flow
with `reveal_secrets = false`. Any other use (formatting, concatenating, slicing, comparing,
`str()`, `.encode()`, ...) needs the value: it is asked of the host then, which answers only
when the flow reveals secrets; otherwise `SecretNotRevealed` says so.

The characters a `SecretValue` holds are a placeholder, not the secret. Code that reads a
string's characters without calling its methods (`str.join`, `json.dumps`, `bytes(s, enc)`,
`re`) copies the placeholder: it starts and ends with a lone surrogate, so no codec will
encode it (the copy can never be sent or hashed by mistake), and `requests`, the log,
decisions, the cache and identities refuse any string that carries it, naming the secret.
"""

from wit_world.imports import secrets as _wit

from ._host import call
from .errors import SecretError, SecretNotRevealed

_TAG = "warden-sealed-secret["
_FENCE = "\ud800"  # a lone surrogate: unencodable in UTF-8, so copies fail loudly
_TAG_BYTES = _TAG.encode("ascii")
# How a copy's fence reads before its tag: as it is, as JSON escapes it (`json.dumps`), and
# (in bytes) as `surrogatepass` encodes it. Text from the host never holds a lone
# surrogate: a person's `warden-sealed-secret[` alone is their text, not a copy.
_FENCES = (_FENCE, "\\ud800", "\\uD800")
_FENCES_BYTES = (b"\\ud800", b"\\uD800", _FENCE.encode("utf-8", "surrogatepass"))


class Secret:
    """One secret of an integration. Its value is `retrieve_value()`."""

    __slots__ = ("_handle", "_id", "_raw")

    def __init__(self, handle):
        self._handle = handle
        self._id = None
        self._raw = None

    @property
    def id(self):
        """The secret's id in the operator's config."""
        if self._id is None:
            self._id = self._handle.id()
        return self._id

    @property
    def path(self):
        """Where the operator keeps it (an environment variable's name, a file path, ...)."""
        return self._handle.path()

    def retrieve_value(self):
        """The secret's value as a `SecretValue`: sent sealed when used as a whole header
        value; read from the host only when the hook uses it any other way."""
        return SecretValue(self)

    def _value(self, use):
        if self._raw is None:
            raw, error = call(self._handle.retrieve_value)
            if error is not None:
                if isinstance(error, _wit.SecretError_SealedOnly):
                    raise SecretNotRevealed(
                        f"cannot {use}: {error.value}. A secret put as it is into a request "
                        "header is sent sealed; any other use needs reveal_secrets = true"
                    )
                if isinstance(error, _wit.SecretError_NotGranted):
                    raise SecretError(f"not-granted: {error.value}")
                raise SecretError(f"unavailable: {error.value}")
            self._raw = raw
        return self._raw

    def __repr__(self):
        return f"<Secret {self.id!r}>"


def open_secret(secret_id):
    """A secret by id; only secrets attached to one of the environment's integrations."""
    handle, error = call(_wit.open, secret_id)
    if error is not None:
        raise SecretError(f"not-granted: {error.value}")
    return Secret(handle)


class SecretValue(str):
    """A secret's value, not held by the plugin until it is used as text. See the module
    documentation."""

    def __new__(cls, secret):
        self = super().__new__(cls, f"{_FENCE}{_TAG}{secret.id}]{_FENCE}")
        self._secret = secret
        return self

    @property
    def secret(self):
        """The `Secret` this is the value of."""
        return self._secret

    def reveal(self):
        """The value as a plain `str` (only in a flow that reveals secrets)."""
        return self._secret._value("read its value")

    def _value(self, use):
        return self._secret._value(use)

    def __repr__(self):
        return f"<sealed value of secret {self._secret.id!r}>"

    def __str__(self):
        return self._value("convert it to text (str(), print, %s)")

    def __format__(self, spec):
        return format(self._value("format it (f-string, str.format)"), spec)

    def __len__(self):
        return len(self._value("take its length"))

    def __bool__(self):
        return bool(self._value("test whether it is empty"))

    def __getitem__(self, key):
        return self._value("index or slice it")[key]

    def __iter__(self):
        return iter(self._value("iterate over it"))

    def __contains__(self, item):
        return item in self._value("search it (in)")

    def __add__(self, other):
        return self._value("concatenate it") + other

    def __radd__(self, other):
        return other + self._value("concatenate it")

    def __mul__(self, n):
        return self._value("repeat it") * n

    __rmul__ = __mul__

    def __mod__(self, args):
        return self._value("format with it") % args

    def __rmod__(self, template):
        return template % self._value("format it (%)")

    def __eq__(self, other):
        return self._value("compare it") == _plain_other(other, "compare it")

    def __ne__(self, other):
        return self._value("compare it") != _plain_other(other, "compare it")

    def __lt__(self, other):
        return self._value("compare it") < _plain_other(other, "compare it")

    def __le__(self, other):
        return self._value("compare it") <= _plain_other(other, "compare it")

    def __gt__(self, other):
        return self._value("compare it") > _plain_other(other, "compare it")

    def __ge__(self, other):
        return self._value("compare it") >= _plain_other(other, "compare it")

    def __hash__(self):
        return hash(self._value("hash it (a dict key, a set)"))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce_ex__(self, protocol):
        raise TypeError("a secret's value cannot be pickled")

    def __getnewargs__(self):
        raise TypeError("a secret's value cannot be copied as text")


def _plain_other(other, use):
    return other._value(use) if isinstance(other, SecretValue) else other


def _delegate(name):
    def method(self, *args, **kwargs):
        return getattr(self._value(f"call .{name}() on it"), name)(*args, **kwargs)

    method.__name__ = name
    method.__qualname__ = f"SecretValue.{name}"
    method.__doc__ = f"`str.{name}` on the value (only in a flow that reveals secrets)."
    return method


# Every public `str` method works on the value; each one needs the value.
for _name in dir(str):
    if not _name.startswith("_") and _name != "maketrans":
        setattr(SecretValue, _name, _delegate(_name))
del _name


def plain(value, use):
    """`value` as a plain `str`: a `SecretValue` is replaced by its value (which needs a
    flow that reveals secrets), any other str subclass by its characters."""
    if isinstance(value, SecretValue):
        return value._value(use)
    if isinstance(value, str) and type(value) is not str:
        return str.__str__(value)
    return value


def placeholder_in(data):
    """The id of a secret whose placeholder `data` (str or bytes) carries, or None."""
    if isinstance(data, str):
        return _fenced(data, _TAG, _FENCES, "]")
    if isinstance(data, (bytes, bytearray, memoryview)):
        found = _fenced(bytes(data), _TAG_BYTES, _FENCES_BYTES, b"]")
        return None if found is None else found.decode("utf-8", "replace")
    return None


def _fenced(data, tag, fences, close):
    """What follows the first `tag` in `data` that one of `fences` comes just before, up to
    `close`; None if no tag is fenced."""
    start = data.find(tag)
    while start >= 0:
        if any(data.endswith(fence, 0, start) for fence in fences):
            end = data.find(close, start)
            return data[start + len(tag) : end if end >= 0 else None]
        start = data.find(tag, start + 1)
    return None


def refuse_placeholders(data, where):
    """Raises `SecretError` when `data` carries a secret's placeholder."""
    secret_id = placeholder_in(data)
    if secret_id is not None:
        raise SecretError(
            f"{where} holds a copy of secret `{secret_id}`'s placeholder, not its value: it was "
            "copied by code that reads characters directly (str.join, json.dumps, bytes(), re, "
            "...). Send the secret as a whole header value (sealed), or, in a flow that reveals "
            "secrets, use str(value) before building text with it"
        )
