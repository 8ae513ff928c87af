"""The errors the SDK raises. A hook that lets any exception escape fails closed: the
request goes to a human, and the Python traceback is the hook's error."""


class WardenError(Exception):
    """Something the host refused or could not do."""


class SecretError(WardenError):
    """A secret could not be opened or read."""


class SecretNotRevealed(SecretError):
    """The hook used a secret's value (formatting, slicing, comparing, concatenating, ...)
    in a flow with `reveal_secrets = false`. Such a flow only lets a secret be sent as a
    whole HTTP header value, sealed: the host fills it in and the plugin never holds it."""


class IdentityError(WardenError):
    """An identity could not be looked up or stored."""


class CacheError(WardenError):
    """A value could not be cached (over the host's size caps)."""
