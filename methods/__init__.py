"""Open-set recognition methods, one file each, registered by name.

Every module of this package is imported here so its ``@register`` runs: adding a method is adding
a file, nothing else is edited."""

import importlib
import pkgutil

from methods.base import DataInfo, DivergedError, Method, MethodConfig
from methods.registry import get_method, method_names, register

_SUPPORT_MODULES = {"base", "registry", "backbones", "optim"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _SUPPORT_MODULES:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DataInfo", "DivergedError", "Method", "MethodConfig", "get_method", "method_names", "register"]
