"""Write warden plugins in Python: access-request hooks that run in warden's WebAssembly
sandbox, with the names of Sym's SDK.

    from warden import ApprovalTemplate, hook

    @hook
    def on_request(event):
        if event.requester.email in event.flow.vars.get("auto_approve", "").split(","):
            return ApprovalTemplate.approve(reason="on the auto-approve list")
        # None: a human decides

Build with `warden build DIR` (componentize-py). See
docs/plugin-authors.md, "Python".
"""

from . import cache, log
from ._hooks import HOOK_NAMES, HookDefinitionError, hook
from .errors import (
    CacheError,
    IdentityError,
    SecretError,
    SecretNotRevealed,
    WardenError,
)
from .events import Event, Flow, Integration, IntegrationNotFound, User
from .identities import Identity, persist_user_identity
from .identities import lookup as lookup_identity
from .secrets import Secret, SecretValue, open_secret
from .templates import ApprovalTemplate, Decision

__all__ = [
    "ApprovalTemplate",
    "CacheError",
    "Decision",
    "Event",
    "Flow",
    "HOOK_NAMES",
    "HookDefinitionError",
    "Identity",
    "IdentityError",
    "Integration",
    "IntegrationNotFound",
    "Secret",
    "SecretError",
    "SecretNotRevealed",
    "SecretValue",
    "User",
    "WardenError",
    "cache",
    "hook",
    "log",
    "lookup_identity",
    "open_secret",
    "persist_user_identity",
]
