"""Name lookup and the ``get`` / ``serialize`` / ``deserialize`` trio, shared by the
initializers, regularizers and constraints modules.

Keras lets a layer argument be a string, a config dict, an instance or a plain callable; each of
those three modules owns one ``Registry`` that turns any of these into an object, and back into
a JSON-serialisable ``{"class_name": ..., "config": {...}}`` dict.
"""

from __future__ import annotations


class Registry:
    """Known classes of one kind (e.g. "initializer"), each under its class name and aliases."""

    def __init__(self, kind: str, base: type, aliases: dict):
        self.kind = kind
        self.base = base
        self.classes: dict[str, type] = {}
        for cls, names in aliases.items():
            for name in (cls.__name__, *names):
                self.classes[name] = cls

    def lookup(self, name: str) -> type:
        """The class registered as ``name`` (case-sensitive, as in Keras)."""
        try:
            return self.classes[name]
        except KeyError:
            known = ", ".join(sorted(self.classes))
            raise ValueError(f"unknown {self.kind} {name!r}; known names are: {known}") from None

    def get(self, identifier):
        """None, a name, a config dict, an instance, a class or a callable -> an object (or
        None)."""
        if identifier is None:
            return None
        if isinstance(identifier, str):
            return self.lookup(identifier)()
        if isinstance(identifier, dict):
            return self.deserialize(identifier)
        if isinstance(identifier, type):
            if issubclass(identifier, self.base):
                return identifier()
            raise TypeError(f"a {self.kind} class must subclass {self.base.__name__}, "
                            f"got {identifier.__name__}")
        if callable(identifier):  # an instance (instances are callable) or a plain function
            return identifier
        raise TypeError(f"could not interpret {self.kind} identifier {identifier!r} of type "
                        f"{type(identifier).__name__}: expected None, a name, a config dict, "
                        f"an instance or a callable")

    def serialize(self, obj) -> dict | None:
        """``{"class_name": ..., "config": ...}`` for an instance; None for None."""
        if obj is None:
            return None
        if not isinstance(obj, self.base):
            raise TypeError(f"can serialize only {self.base.__name__} instances (they have "
                            f"get_config), got {type(obj).__name__}")
        return {"class_name": type(obj).__name__, "config": obj.get_config()}

    def deserialize(self, config):
        """The inverse of ``serialize``; extra Keras keys ("module", "registered_name") are
        ignored."""
        if isinstance(config, str):
            return self.lookup(config)()
        if not isinstance(config, dict):
            raise TypeError(f"{self.kind} config must be a dict with 'class_name' and 'config', "
                            f"got {type(config).__name__}")
        if not isinstance(config.get("class_name"), str):
            raise ValueError(f"{self.kind} config needs a 'class_name' string, got {config!r}")
        inner = config.get("config") or {}
        if not isinstance(inner, dict):
            raise TypeError(f"{self.kind} config['config'] must be a dict, "
                            f"got {type(inner).__name__}")
        return self.lookup(config["class_name"]).from_config(dict(inner))
