"""The event a hook receives, shaped like Sym's: `event.flow.environment.integrations[...]`,
`event.payload.fields[...]`, `event.user`, `event.requester`, `event.flow.vars`."""

import datetime
from collections.abc import Mapping
from functools import cached_property

from wit_world.imports import integrations as _wit_integrations
from wit_world.imports import types as _types

from . import identities as _identities
from .secrets import Secret


class Event:
    """One step of an access request, as the host passed it in.

    Its parts are made from the host's event when a hook first reads them, and kept: a fresh
    instance runs every line cold, so a part the hook never reads should cost nothing."""

    def __init__(self, wit_event):
        self._wit = wit_event

    @cached_property
    def id(self):
        """The event's id."""
        return self._wit.id

    @cached_property
    def step(self):
        """The step: `prompt`, `request`, `approve`, `deny`, `escalate`, `deescalate`."""
        return self._wit.step.name.lower()

    @cached_property
    def flow(self):
        return Flow(self._wit.flow)

    @cached_property
    def user(self):
        """Who caused this event (the requester for `request`, the approver for `approve`)."""
        return User(self._wit.user)

    @cached_property
    def requester(self):
        """Who asked for access."""
        return User(self._wit.requester)

    @cached_property
    def payload(self):
        return Payload(self._wit)

    @property
    def fields(self):
        """The request's fields (the same as `event.payload.fields`)."""
        return self.payload.fields

    @property
    def timestamp(self):
        return self.payload.timestamp

    def __repr__(self):
        return f"<Event {self.id} {self.step} in flow {self.flow.name!r}>"


class Payload:
    """The request's data: `fields` by name, and when the event happened."""

    def __init__(self, wit_event):
        self._wit = wit_event

    @cached_property
    def fields(self):
        """Field values by name: `str`, `int`, `bool`, a list of `str`, or a duration in
        whole seconds (`int`)."""
        return {f.name: _field_value(f.value) for f in self._wit.fields}

    @cached_property
    def timestamp(self):
        """When the event happened (a timezone-aware `datetime`, UTC)."""
        return _parse_time(self._wit.timestamp)


def _field_value(value):
    if isinstance(value, (_types.FieldValue_TextList,)):
        return list(value.value)
    # text, integer, boolean and duration-seconds all carry a plain value.
    return value.value


def _parse_time(text):
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text


class Flow:
    """The flow the event belongs to."""

    def __init__(self, wit_flow):
        self._wit = wit_flow
        self.name = wit_flow.name
        self.environment = Environment()

    @cached_property
    def vars(self):
        """The operator's `vars` for this flow (all values are `str`)."""
        return dict(self._wit.vars)

    def __repr__(self):
        return f"<Flow {self.name!r}>"


class Environment:
    """The flow's environment: its integrations, by alias."""

    def __init__(self):
        self.integrations = Integrations()


class IntegrationNotFound(KeyError):
    def __str__(self):
        return self.args[0]


class Integrations(Mapping):
    """The environment's integrations by alias, e.g. `integrations["victorops"]`."""

    def __init__(self):
        self._seen = {}
        self._aliases = None

    def __getitem__(self, alias):
        if alias not in self._seen:
            found = _wit_integrations.get(alias)
            if found is None:
                have = ", ".join(f"`{a}`" for a in self._all()) or "none"
                raise IntegrationNotFound(
                    f"no integration `{alias}` in this flow's environment (it has: {have})"
                )
            self._seen[alias] = Integration(alias, found)
        return self._seen[alias]

    def _all(self):
        if self._aliases is None:
            self._aliases = list(_wit_integrations.aliases())
        return self._aliases

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())

    def __contains__(self, alias):
        return alias in self._all()


class Integration:
    """An integration (`sym_integration`): `name`, `type`, `external_id`, `settings`.
    `settings["secrets"]` is its list of secrets, as in Sym."""

    def __init__(self, alias, wit):
        self.alias = alias
        self.name = wit.name
        self.type = wit.type
        self.external_id = wit.external_id
        self.secrets = [Secret(handle) for handle in wit.secrets]
        self.settings = dict(wit.settings)
        self.settings["secrets"] = self.secrets

    def __repr__(self):
        return f"<Integration {self.alias!r}: {self.name} ({self.type}, {self.external_id})>"


class User:
    """A person known to the access platform."""

    def __init__(self, wit_user):
        self.email = wit_user.email
        self.username = wit_user.username
        self.id = wit_user.id
        self.first_name = wit_user.first_name
        self.last_name = wit_user.last_name

    def identity(self, service, service_id):
        """This user's stored identity in `service` / `service_id` (for a custom
        integration: `"custom"` and its `external_id`), or None."""
        return _identities.lookup(self.email, service, service_id)

    def __eq__(self, other):
        if not isinstance(other, User):
            return NotImplemented
        return self.email.lower() == other.email.lower()

    def __hash__(self):
        return hash(self.email.lower())

    def __repr__(self):
        return f"<User {self.email}>"
