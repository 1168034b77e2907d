"""Domain errors of the inference server; servicer.py maps each to one gRPC status, once, at the edge."""


class PredmeshError(Exception):
    """Base of every error the server raises on purpose."""


class ModelNotFound(PredmeshError):
    """No model (or version) of that name exists."""


class InvalidFeatures(PredmeshError):
    """Features missing, extra, non-finite or out of range; or a malformed request."""


class TooManyRows(PredmeshError):
    """A batch exceeds the configured max rows."""


class ModelNotReady(PredmeshError):
    """The model exists but no version is loaded, or the server is draining."""


class StorageUnavailable(ModelNotReady):
    """The prediction database cannot be reached now (UNAVAILABLE, like every other not-ready condition)."""


class ReloadFailed(PredmeshError):
    """A candidate version failed loading, verification or the smoke test; the serving version is unchanged."""


class UntrustedArtifact(ReloadFailed):
    """The artifact's path, hash, signature or contents are not trusted; it was never deserialised."""


class Overloaded(PredmeshError):
    """The server cannot take the request now (e.g. the prediction log spool is full)."""


class DeadlineExceeded(PredmeshError):
    """The client's deadline passed before the work finished."""


class Unauthenticated(PredmeshError):
    """Missing or wrong admin credentials."""


class PermissionDenied(PredmeshError):
    """Valid credentials without the right to this call."""
