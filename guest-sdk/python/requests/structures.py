"""`CaseInsensitiveDict`, for `Response.headers`."""

from collections.abc import Mapping, MutableMapping


class CaseInsensitiveDict(MutableMapping):
    """A dict whose str keys compare without case, keeping the case last set."""

    def __init__(self, data=None, **kwargs):
        self._store = {}
        if data or kwargs:
            self.update(data or {}, **kwargs)

    @classmethod
    def _joined(cls, pairs):
        """From `(name, value)` pairs as an answer's headers come, a name seen again joined
        to its earlier value with ", " (as `requests` does). Built on a plain dict: going
        through `MutableMapping`'s methods costs more than the whole answer otherwise does
        in a fresh instance, where every line runs cold."""
        store = {}
        for name, value in pairs:
            key = name.lower()
            earlier = store.get(key)
            store[key] = (name, value) if earlier is None else (name, f"{earlier[1]}, {value}")
        made = cls.__new__(cls)
        made._store = store
        return made

    def __setitem__(self, key, value):
        self._store[key.lower()] = (key, value)

    def __getitem__(self, key):
        return self._store[key.lower()][1]

    def __delitem__(self, key):
        del self._store[key.lower()]

    def __iter__(self):
        return (key for key, _ in self._store.values())

    def __len__(self):
        return len(self._store)

    def lower_items(self):
        return ((lower, kv[1]) for lower, kv in self._store.items())

    def __eq__(self, other):
        if isinstance(other, Mapping):
            other = CaseInsensitiveDict(other)
        else:
            return NotImplemented
        return dict(self.lower_items()) == dict(other.lower_items())

    def copy(self):
        return CaseInsensitiveDict(self._store.values())

    def __repr__(self):
        return str(dict(self.items()))
