""" Verified downloads: every Hub download of a model or a memory goes through :func:`download_folder`. """
import logging
from pathlib import Path
from typing import Optional, Sequence

from .errors import HubUnavailableError, IntegrityError
from .limits import hub_call, hub_endpoint
from .specs import HubRef, parse_hub_ref
from .verify import hub_problems, verify_folder

__all__ = ['download_folder']

_logger = logging.getLogger(__name__)


def download_folder(
        repo_id: str,
        revision: Optional[str] = None,
        path_in_repo: Optional[str] = None,
        required: Sequence[str] = (),
        cache_dir=None,
        token: Optional[str] = None,
        endpoint: Optional[str] = None,
        local_files_only: bool = False,
        allow_patterns: Optional[Sequence[str]] = None,
) -> Path:
    """Download (or find in the Hugging Face cache) a repo, or its ``path_in_repo`` sub-folder, and verify it.

    ``revision`` (branch, tag or commit) pins what is fetched; ``allow_patterns`` (repo paths) narrows
    it. Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) the folder comes from the cache,
    which must hold that revision. The call is bounded in time (:mod:`timm_u1.io.limits`). Online, the
    files are compared with the Hub's listing of the commit; everywhere with their cache blob names and
    for whole JSON and safetensors files (:mod:`timm_u1.io.verify`). Returns the folder inside the
    cache snapshot. Hub failures are one-line errors naming the repo and the endpoint.
    """
    from huggingface_hub import HfApi, constants, snapshot_download

    ref = HubRef(repo_id, revision)
    if parse_hub_ref(f'hf-hub:{repo_id}') is None:  # validates the id (raises ValueError)
        raise ValueError(f'{repo_id!r} is not a Hub repo id')
    patterns = list(allow_patterns) if allow_patterns else None
    if path_in_repo:
        patterns = [f'{path_in_repo.strip("/")}/{p}' for p in (patterns or ['*'])]
    offline = local_files_only or constants.is_offline_mode()
    with hub_call(f'cannot download {ref}', endpoint):
        snapshot = Path(snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, token=token, endpoint=endpoint,
            allow_patterns=patterns, local_files_only=local_files_only))
        folder = snapshot / path_in_repo.strip('/') if path_in_repo else snapshot
        if not folder.is_dir():
            raise FileNotFoundError(f'{ref} has no folder {path_in_repo!r}.')
        problems = {} if offline else _listing_problems(
            HfApi(endpoint=hub_endpoint(endpoint), token=token), repo_id, snapshot, path_in_repo or '', patterns)
    if problems:
        raise IntegrityError(folder, problems)
    return verify_folder(folder, required=required)


def _listing_problems(api, repo_id: str, snapshot: Path, sub: str, patterns) -> dict:
    """The Hub listing check, or nothing when the Hub cannot be asked (the cache then stood in for it)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        return hub_problems(api, repo_id, snapshot, sub, patterns)
    except (OfflineModeIsEnabled, HfHubHTTPError, HubUnavailableError, ConnectionError) as e:
        _logger.info('%s: the Hub could not list commit %s (%s); checked against the cache only.',
                     repo_id, snapshot.name, type(e).__name__)
        return {}
