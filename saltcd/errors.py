"""saltcd's own error types: what a runner reports as a clean failure.

Anything else that escapes (a bare KeyError, a TypeError) is a bug and is left to
surface as one, with its traceback, instead of being dressed up as "not found".
"""


class SaltcdError(Exception):
    """Base of the errors saltcd raises on purpose, with a message for the operator."""


class NotFound(SaltcdError):
    """What was asked for does not exist: an app, an environment, a rollout to promote."""


class Refused(SaltcdError):
    """The request is valid but may not run now; the message says why and what to do."""


class Fenced(SaltcdError):
    """This master no longer holds the app/env it was acting for (its lease lapsed,
    or another master holds the lock now): it must not write or act for it again."""
