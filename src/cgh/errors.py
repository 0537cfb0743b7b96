"""Exceptions raised for bad user input.

Every error a user can cause by a wrong file, key or value is one of these, with a message that names the
culprit (the path, the config key, the value). The command-line tool prints the message and exits with status 2
instead of showing a traceback. They subclass ``ValueError`` so that library users can catch them generically.
"""


class CGHError(ValueError):
    """Base class: a problem with the user's input, reported without a traceback by the CLI."""


class ConfigError(CGHError):
    """An unknown config key, a wrong type or an invalid value."""


class DataError(CGHError):
    """A missing, empty, truncated or wrongly formatted dataset file, or an undecodable image."""


class CheckpointError(CGHError):
    """A checkpoint that is missing, truncated, of another format, method or architecture, or unsafe to load."""


class RunLockedError(CGHError):
    """A run directory whose lock (RUN/lock, cgh.train.runlock) is held by a live run: a second writer is refused."""


class PeerLostError(CGHError):
    """A process of a distributed run lost a peer in a collective (the peer died, or did not answer within
    train.dist_timeout_s). Not the user's input, but reported the same way: one line naming the ranks and the key."""
