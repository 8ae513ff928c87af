"""What a hook returns: `ApprovalTemplate.approve(reason=...)`, `.deny(reason=...)`,
`.ignore(...)`, or `None` to continue (take the step's default path)."""

from . import secrets as _secrets


class Decision:
    """A hook's decision. Make one with `ApprovalTemplate`."""

    __slots__ = ("kind", "reason")

    def __init__(self, kind, reason=None):
        if kind not in ("continue", "approve", "deny", "ignore"):
            raise ValueError(f"unknown decision `{kind}`")
        if reason is not None:
            if not isinstance(reason, str):
                raise TypeError(
                    f"a decision's reason must be a str, not {type(reason).__name__}"
                )
            # A secret given as the reason needs its value (and a flow that reveals it).
            reason = _secrets.plain(reason, "use it as a decision's reason")
            _secrets.refuse_placeholders(reason, "a decision's reason")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "reason", reason)

    def __setattr__(self, name, value):
        raise AttributeError("a Decision cannot be changed")

    def __eq__(self, other):
        if not isinstance(other, Decision):
            return NotImplemented
        return (self.kind, self.reason) == (other.kind, other.reason)

    def __hash__(self):
        return hash((self.kind, self.reason))

    def __repr__(self):
        if self.reason is None:
            return f"Decision({self.kind!r})"
        return f"Decision({self.kind!r}, reason={self.reason!r})"


Decision.CONTINUE = Decision("continue")


class ApprovalTemplate:
    """The decisions of Sym's approval template."""

    @staticmethod
    def approve(reason=None):
        """Approve, with a reason the requester and approvers see. Only `on_request` may
        approve; the host refuses it from other hooks (the hook fails closed)."""
        return Decision("approve", reason)

    @staticmethod
    def deny(reason=None):
        """Deny, with a reason the requester sees. Only `on_request` may deny."""
        return Decision("deny", reason)

    @staticmethod
    def ignore(message=None, *, reason=None):
        """Drop the event silently, with a message for the logs."""
        if message is not None and reason is not None:
            raise TypeError("give ignore() a message or a reason, not both")
        return Decision("ignore", message if message is not None else reason)
