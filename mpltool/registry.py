"""A registry of named parts (algorithms, data sources): the built-in ones by module, imported on first
use, and any a module registers itself (`register`, a class decorator)."""

import importlib
from typing import Any, Dict, List, Optional


class Registry:
    def __init__(self, modules: Dict[str, str]):
        self.modules = modules  # name -> module that registers it
        self.entries = {}  # type: Dict[str, Any]

    def register(self, cls):
        """Decorator: an instance of `cls`, under its `name`."""
        instance = cls()
        self.entries[instance.name] = instance
        return cls

    def names(self) -> List[str]:
        return list(self.modules) + [name for name in self.entries if name not in self.modules]

    def find(self, name: str) -> Optional[Any]:
        """The entry `name`, its module imported when it is a built-in one; None when unknown."""
        if name not in self.entries and name in self.modules:
            importlib.import_module(self.modules[name])
        return self.entries.get(name)
