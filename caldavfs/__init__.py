"""caldavfs: a CalDAV account as a directory tree."""

__version__ = "0.1.0"
