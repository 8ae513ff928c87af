"""`from warden.annotations import hook`, as `from sym.sdk.annotations import hook`."""

from ._hooks import hook

__all__ = ["hook"]
