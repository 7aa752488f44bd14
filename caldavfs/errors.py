"""The exception tree of caldavfs.

Every error that crosses a module boundary is a ``CaldavfsError``. Subclasses are
named by cause, because the filesystem chooses an errno by cause (see ``fs.ERRNO``)
and the command line chooses a message by cause (see ``cli``). This module knows
nothing of errno, requests or lxml.
"""

from __future__ import annotations


class CaldavfsError(Exception):
    """Root of everything caldavfs raises on purpose."""


class ConfigError(CaldavfsError):
    """The user's options or credentials cannot work (bad URL, no password, ...)."""


class ReadOnlyError(CaldavfsError):
    """A write was attempted on a read-only mount or a read-only node."""


class PermissionDeniedError(CaldavfsError):
    """An operation the mount does not offer on this node (e.g. a folder inside a calendar)."""


class AlreadyExistsError(CaldavfsError):
    """The name is taken (link or mkdir onto an existing name)."""


class DirectoryNotEmptyError(CaldavfsError):
    """rmdir of a calendar that still holds items."""


class KeptError(CaldavfsError):
    """An upload failed, and the bytes are safe in the conflicts folder (``path``).

    ``cause`` is the server's error, which decides the errno and the message.
    """

    def __init__(self, message: str, *, cause: CaldavfsError | None = None, path: object = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.path = path


class NotCalDAVError(CaldavfsError):
    """Discovery found no CalDAV calendar home at the given URL."""


class TransportError(CaldavfsError):
    """The server could not be reached, or the answer did not arrive in time."""


class InvalidResponseError(CaldavfsError):
    """The server answered, but with something we refuse to trust (bad XML, too big, ...)."""


class DavError(CaldavfsError):
    """The server answered with an error status."""

    def __init__(self, message: str, *, status: int = 0, url: str = "", precondition: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        # Local name of the DAV:error precondition element, e.g. "valid-calendar-data".
        self.precondition = precondition


class UnauthorizedError(DavError):
    """401: the credentials were refused."""


class ForbiddenError(DavError):
    """403: the server refuses this request for this user."""


class NotFoundError(DavError):
    """404 or 410."""


class MethodNotAllowedError(DavError):
    """405: the resource does not support the method."""


class ConflictError(DavError):
    """409: the request conflicts with the resource's state."""


class PreconditionFailedError(DavError):
    """412: the item changed (or appeared) on the server since we read it."""


class RejectedError(DavError):
    """The server refused the data itself (400, 415, or a CalDAV precondition)."""


class InsufficientStorageError(DavError):
    """507: the server is out of space, or truncated an answer."""


class ServerError(DavError):
    """5xx other than 507."""
