"""User-facing errors. The CLI prints a `DspycError` as one line (no traceback) and exits 2."""


class DspycError(Exception):
    """A problem the user can fix: bad input, bad settings, a service that is not there."""


class DataError(DspycError):
    """A dataset row or file failed validation."""


class EngineError(DspycError):
    """The LM engine could not be started or reached."""


class ArtifactError(DspycError):
    """A compiled artifact is missing, incomplete or does not match its manifest."""


class TrackingError(DspycError):
    """The tracking store (MLflow) failed: locked, unreachable, or refused a request."""


def first_line(e: BaseException | str | None) -> str:
    """User-facing errors are one line; server bodies and library messages are often paragraphs."""
    text = str(e if e is not None else "").strip()
    return text.splitlines()[0] if text else type(e).__name__ if isinstance(e, BaseException) else "(empty body)"
