"""Domain errors of the inference server, one family per gRPC status; inference/rpc/edge.py maps each family to its
status, once, at the RPC edge (the SDK has its own hierarchy in predmesh/errors.py)."""


class PredmeshError(Exception):
    """Base of every error the server raises on purpose."""


# -- INVALID_ARGUMENT: the request itself is wrong; retrying it unchanged cannot succeed -------------------------
class InvalidArgument(PredmeshError):
    """A malformed request: a field too long, with forbidden characters, out of range, or of the wrong shape."""


class InvalidName(InvalidArgument):
    """A model or version name that cannot exist (empty, too long, separators, dot-dot)."""


class InvalidFeatures(InvalidArgument):
    """Features missing, extra, non-finite or out of the model's plausible range."""


class TooManyRows(InvalidArgument):
    """A batch exceeds the configured max rows."""


# -- NOT_FOUND -----------------------------------------------------------------------------------------------------
class NotFound(PredmeshError):
    """The thing the request names does not exist."""


class ModelNotFound(NotFound):
    """No model (or version) of that name exists."""


class PredictionNotFound(NotFound):
    """No stored prediction has that id (yet)."""


# -- UNAVAILABLE: may pass; clients retry ---------------------------------------------------------------------------
class Unavailable(PredmeshError):
    """Something the call needs is not available now; the same call may succeed later."""


class ModelNotReady(Unavailable):
    """The model exists but no version is loaded, or the server is draining."""


class StorageUnavailable(Unavailable):
    """The prediction database cannot be reached now."""


# -- FAILED_PRECONDITION ------------------------------------------------------------------------------------------
class ReloadFailed(PredmeshError):
    """A candidate version failed loading, verification or the smoke test; the serving version is unchanged."""


class UntrustedArtifact(ReloadFailed):
    """The artifact's path, hash, signature or contents are not trusted; it was never deserialised (or, for a
    tree, never handed to compiled code)."""


class FailedPrecondition(PredmeshError):
    """The request is valid but the state it acts on does not allow it (e.g. a batch run attempt already
    finished)."""


# -- ALREADY_EXISTS -------------------------------------------------------------------------------------------------
class AlreadyExists(PredmeshError):
    """The request's idempotency key (request_id) was already used for a different request."""


# -- the rest ------------------------------------------------------------------------------------------------------
class Overloaded(PredmeshError):
    """The server cannot take the request now (e.g. the prediction log spool is full)."""


class DeadlineExceeded(PredmeshError):
    """The client's deadline passed before the work finished."""


class Unauthenticated(PredmeshError):
    """Missing or wrong admin credentials."""


class PermissionDenied(PredmeshError):
    """Valid credentials without the right to this call."""
