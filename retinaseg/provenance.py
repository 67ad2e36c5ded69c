"""What a table or a folder of maps was made with, for a methods section: the versions of the packages that decide
its numbers (run.json and measurements.json record them)."""
from __future__ import annotations

import platform


def versions(*packages: str) -> dict:
    """retinaseg's and Python's versions, and each installed distribution's (None where it is not installed); an
    imported module's own __version__ where there is one, as it names the build (torch's "+cu130")."""
    import sys
    from importlib.metadata import PackageNotFoundError, version

    from retinaseg import __version__

    found = {"retinaseg": __version__, "python": platform.python_version()}
    for package in packages:
        module = sys.modules.get(package.replace("-", "_"))
        try:
            found[package] = getattr(module, "__version__", None) or version(package)
        except PackageNotFoundError:
            found[package] = None
    return found
