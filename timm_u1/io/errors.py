""" The errors of the io layer, and the one translation of a failed Hub call into a one-line user error. """
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

from huggingface_hub.errors import OfflineModeIsEnabled

__all__ = [
    'IntegrityError', 'HubUnavailableError', 'MissingTokenError', 'PushError', 'UnsafeCheckpointError',
    'HubStopped', 'causes', 'translate_hub_error',
]


class IntegrityError(OSError):
    """A folder has missing or corrupt files; ``problems`` maps each file to what is wrong."""

    def __init__(self, folder: Path, problems: Dict[str, str]):
        lines = '\n'.join(f'  {name}: {why}' for name, why in sorted(problems.items()))
        super().__init__(
            f'{folder} is incomplete or corrupt:\n{lines}\nDelete the folder (or that revision from the '
            f'Hugging Face cache, e.g. with `hf cache rm`) and download it again.')
        self.folder = folder
        self.problems = problems


class HubUnavailableError(ConnectionError):
    """The Hub did not answer (in time, or at all) and the cache cannot stand in."""


class MissingTokenError(RuntimeError):
    """No Hugging Face token was given or found; raised before any file is written or sent."""


class PushError(RuntimeError):
    """An upload failed. ``uploaded`` lists the repo paths the Hub holds with the local content
    at the target revision, ``not_uploaded`` the others."""

    def __init__(self, message: str, uploaded: Sequence[str] = (), not_uploaded: Sequence[str] = ()):
        super().__init__(message)
        self.uploaded = list(uploaded)
        self.not_uploaded = list(not_uploaded)


class UnsafeCheckpointError(ValueError):
    """A checkpoint that needs unpickling, refused because the caller did not opt in."""


class HubStopped(OfflineModeIsEnabled):
    """Raised inside huggingface_hub's own calls when timm_u1's limit ends a Hub call (see :mod:`.limits`).

    An ``OfflineModeIsEnabled``: huggingface_hub does not retry it and falls back to its cache on it,
    exactly as when the Hub is switched off. ``why`` is what ended the call, for the user's message.
    """

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from or during, innermost last."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def translate_hub_error(
        error: BaseException, what: str, endpoint: str, stopped: Optional[HubStopped] = None,
) -> Optional[Exception]:
    """A one-line user error for a failed Hub call (``what`` says what was attempted), or None for an
    error that is not about the Hub (it is raised unchanged).

    ``stopped`` is what ended the call when timm_u1's limit did: libraries above huggingface_hub
    (datasets) do not always chain the error they raise to it.
    """
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    if isinstance(error, (HubUnavailableError, PushError, IntegrityError)):  # already says what happened
        return None
    chain = list(causes(error))
    stopped = next((e for e in chain if isinstance(e, HubStopped)), stopped)
    if stopped is not None:
        return HubUnavailableError(
            f'{what}: the Hugging Face Hub at {endpoint} {stopped.why}, and the files are not in the local cache. '
            f'Retry later, raise the limit with TIMM_U1_HUB_TIMEOUT=SECONDS, or work offline from the cache '
            f'(HF_HUB_OFFLINE=1).')
    for cause in chain:
        if isinstance(cause, GatedRepoError):
            return PermissionError(f'{what}: {endpoint} says the repo is gated; accept its terms and pass a token.')
        if isinstance(cause, RepositoryNotFoundError):
            return FileNotFoundError(
                f'{what}: no such repo at {endpoint} (or it is private: pass a token / set HF_TOKEN). Check the '
                f'ORG/NAME spelling; a local folder must exist.')
        if isinstance(cause, RevisionNotFoundError):
            return FileNotFoundError(
                f'{what}: the repo has no such revision at {endpoint}; check the branch, tag or commit.')
        if isinstance(cause, HfHubHTTPError):
            status = getattr(getattr(cause, 'response', None), 'status_code', None)
            if status in (401, 403):
                return PermissionError(f'{what}: {endpoint} refused the token (HTTP {status}); pass a valid one '
                                       f'(token=, --token, HF_TOKEN) with access to the repo.')
            return HubUnavailableError(
                f'{what}: the Hugging Face Hub at {endpoint} answered HTTP {status} '
                f'({str(cause).splitlines()[0][:200]}). Retry later.')
    if any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return HubUnavailableError(
            f'{what}: it is not in the local Hugging Face cache and offline mode is on (HF_HUB_OFFLINE). '
            f'Download it once online, or use a local folder.')
    if isinstance(error, LocalEntryNotFoundError):
        return HubUnavailableError(
            f'{what}: the Hub cannot be reached at {endpoint} and it is not in the local Hugging Face cache. '
            f'Download it once online, or use a local folder.')
    import httpx2  # huggingface_hub's HTTP library (a declared dependency)

    transport = next((e for e in chain if isinstance(e, (httpx2.TransportError, ConnectionError))), None)
    if transport is not None:
        return HubUnavailableError(
            f'{what}: the Hub cannot be reached at {endpoint} ({type(transport).__name__}: '
            f'{str(transport).splitlines()[0][:200] if str(transport) else "no detail"}).')
    return None
