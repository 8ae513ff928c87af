"""Users' accounts in other services, stored by the host between events."""

from dataclasses import dataclass

from wit_world.imports import identities as _wit

from ._host import call
from .errors import IdentityError
from .secrets import plain, refuse_placeholders

_VARIANTS = {
    _wit.IdentityError_NotGranted: "not-granted",
    _wit.IdentityError_Invalid: "invalid",
    _wit.IdentityError_Store: "store",
}


@dataclass(frozen=True)
class Identity:
    """A user's account in another service: `user_id` in `service` / `service_id`."""

    service: str
    service_id: str
    user_id: str


def _identity(wit):
    return Identity(wit.service, wit.service_id, wit.user_id)


def _error(error):
    variant = _VARIANTS.get(type(error), "error")
    return IdentityError(f"{variant}: {error.value}")


def _args(*values):
    out = []
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"identities take str arguments, not {type(value).__name__}")
        value = plain(value, "store it as an identity")
        refuse_placeholders(value, "an identity")
        out.append(value)
    return out


def lookup(email, service, service_id):
    """The identity stored for `email` in `service` / `service_id`, or None."""
    found, error = call(_wit.lookup, *_args(email, service, service_id))
    if error is not None:
        raise _error(error)
    return None if found is None else _identity(found)


def persist_user_identity(email, service, service_id, user_id):
    """Create or update the identity of the user `email` in `service` / `service_id`
    (for a custom integration: `"custom"` and its `external_id`). Returns the `Identity`."""
    stored, error = call(_wit.persist, *_args(email, service, service_id, user_id))
    if error is not None:
        raise _error(error)
    return _identity(stored)
