"""The plugin manager. Built-in and third-party plugins load the same way: through the ``retinaseg``
entry-point group.

``RETINASEG_LOAD_PLUGINS`` restricts loading to a comma-separated allow-list of entry-point or package names
(an empty value loads none), e.g. ``RETINASEG_LOAD_PLUGINS=unet,losses,datasets``.
"""
from __future__ import annotations

import importlib.metadata
import os
import warnings

import pluggy

from retinaseg import hookspecs

ENTRY_POINT_GROUP = "retinaseg"
ALLOW_LIST_ENV = "RETINASEG_LOAD_PLUGINS"

pm = pluggy.PluginManager("retinaseg")
pm.add_hookspecs(hookspecs)

# plugin name -> (distribution name, version) for entry-point plugins
_distributions: dict[str, tuple[str, str]] = {}
_loaded = False


class PluginLoadWarning(UserWarning):
    """A plugin that could not be imported; the others still load."""


def _allowed(entry_point) -> bool:
    allow = os.environ.get(ALLOW_LIST_ENV)
    if allow is None:
        return True
    names = {n.strip() for n in allow.split(",") if n.strip()}
    dist = entry_point.dist.name if entry_point.dist else None
    return entry_point.name in names or (dist is not None and dist in names)


def load_plugins() -> None:
    """Import every plugin of the entry-point group once. A plugin that fails to import is reported with a
    warning naming it, and the rest load."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if not _allowed(entry_point) or pm.get_plugin(entry_point.name) is not None:
            continue
        dist = entry_point.dist
        package = f"{dist.name} {dist.version}" if dist else "unknown package"
        try:
            plugin = entry_point.load()
        except Exception as exc:  # any import error in third-party code must not take the tool down
            warnings.warn(
                f"plugin {entry_point.name!r} ({package}) failed to import and was skipped: "
                f"{type(exc).__name__}: {exc}",
                PluginLoadWarning,
                stacklevel=2,
            )
            continue
        pm.register(plugin, name=entry_point.name)
        if dist:
            _distributions[entry_point.name] = (dist.name, dist.version)


def plugin_package(plugin_name: str) -> str:
    """'package version' that provides a plugin, or a note when it was registered directly."""
    if plugin_name in _distributions:
        return " ".join(_distributions[plugin_name])
    plugin = pm.get_plugin(plugin_name)
    module = getattr(plugin, "__module__", None) or getattr(plugin, "__name__", "")
    return f"registered directly ({module})" if module else "registered directly"

