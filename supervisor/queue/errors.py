"""The queue's exceptions; every message is meant for the operator as it stands."""

from __future__ import annotations


class QueueError(Exception):
    """A queue operation that cannot be done; the message is for the operator."""


class QueueUnavailable(QueueError):
    """The database cannot be reached right now; the same call may succeed later."""


class SchemaOutdated(QueueError):
    pass


class JobNotFound(QueueError):
    pass


class InvalidJob(QueueError):
    """enqueue refused its arguments (unknown pass, priority out of range…); the same text on both backends."""
