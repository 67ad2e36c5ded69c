"""Domain errors. The CLI turns every RetinasegError into `Error: ...` and exit status 1."""


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


class DuplicateNameError(RetinasegError):
    """Two plugins registered the same name."""


class ImageReadError(RetinasegError):
    """An input file that cannot be used as an image. The message names the file."""


class DatasetError(RetinasegError):
    """A dataset folder that is missing, incomplete or mismatched."""


class CheckpointError(RetinasegError):
    """A weights file that cannot be loaded safely."""
