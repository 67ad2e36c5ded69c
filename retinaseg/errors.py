"""Domain errors, and how messages name files. The CLI turns every RetinasegError into `Error: ...`."""


class RetinasegError(Exception):
    """Base class for errors a user can act on."""


class UnknownNameError(RetinasegError, KeyError):
    """A model, loss or dataset name that no plugin registered."""

    def __init__(self, kind: str, name: str, valid):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        options = ", ".join(self.valid) or "(none registered)"
        super().__init__(f"unknown {kind} {name!r}; choose one of: {options}")

    def __str__(self):  # KeyError would otherwise quote the message
        return self.args[0]


class OptionError(RetinasegError):
    """An option value that a plugin does not accept: a usage error (exit status 2), like a bad click value."""


class DuplicateNameError(RetinasegError):
    """Two plugins registered the same name."""


class PluginError(RetinasegError):
    """A plugin's code that cannot be imported or used."""


class ImageReadError(RetinasegError):
    """An input file that cannot be used as an image. The message names the file."""


class DatasetError(RetinasegError):
    """A dataset folder that is missing, incomplete or mismatched."""


class CheckpointError(RetinasegError):
    """A weights file that cannot be loaded safely."""


def shown(path) -> str:
    """A file name as messages print it: as it is, or quoted with escapes when it holds a newline or another
    unprintable character, so every message stays one line."""
    text = str(path)
    return text if text.isprintable() else ascii(text)
