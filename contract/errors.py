"""Error types every layer shares: a backend failing, a user's weights being unusable, a model being absent.

The CLI maps ``UserError``/``BadWeights``/``ModelMissing`` to exit 2 and anything else to exit 1."""

from __future__ import annotations


class BackendError(RuntimeError):
    """A backend could not do its job (model missing, malformed output after retries...)."""

    def __init__(self, message: str, raw_output: str = ""):
        super().__init__(message)
        self.raw_output = raw_output


class BadWeights(BackendError):
    """User-supplied weights exist but are unusable (wrong keys/shapes, pickle payload): a user error, exit 2."""


class ModelMissing(BackendError):
    """Weights for a named model are not available locally; the message says how to get them."""


class UserError(Exception):
    """Bad input from the user (path, option, plan): one line on stderr, exit 2."""
