"""Open-set recognition methods, one file each, registered by name.

Importing this package imports every method module so that its ``@register`` runs.
"""

from methods import difair, softmax  # noqa: F401  (registration side effect)
from methods.base import DataInfo, Method, MethodConfig
from methods.registry import get_method, method_names, register

__all__ = ["DataInfo", "Method", "MethodConfig", "get_method", "method_names", "register"]
