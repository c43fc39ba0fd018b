""" The model-spec grammar every command shares: a timm name, ``hf-hub:ORG/NAME[@REV]``, ``ORG/NAME``,
``local-dir:PATH``, a model folder or a timm training checkpoint file.

:func:`model_source` tells a Hub repo or a folder from a timm registry name;
:func:`timm_u1.io.factory.create_model_from_spec` builds the model any of them names.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

__all__ = ['HubRef', 'parse_hub_ref', 'model_source', 'CHECKPOINT_SUFFIXES']

PathLike = Union[str, os.PathLike]

CHECKPOINT_SUFFIXES = ('.pth.tar', '.pth', '.pt')  # how timm's train.py (and torch users) name checkpoints


@dataclass(frozen=True)
class HubRef:
    """A Hub repo (``ORG/NAME``) at an optional revision."""
    repo_id: str
    revision: Optional[str] = None

    def __str__(self) -> str:
        return self.repo_id + (f'@{self.revision}' if self.revision else '')


_HUB_PREFIXES = ('hf-hub:', 'hf_hub:')


def parse_hub_ref(spec: str, revision: Optional[str] = None) -> Optional[HubRef]:
    """The Hub repo a spec names (``hf-hub:ORG/NAME[@REV]`` or ``ORG/NAME[@REV]``), else None.

    An existing local path is never a repo id. ``hf-hub:`` specs that are not valid repo ids raise
    (checked with ``huggingface_hub.utils.validate_repo_id``); bare strings that are not just say None.
    """
    from huggingface_hub.utils import validate_repo_id
    from huggingface_hub.errors import HFValidationError

    spec = str(spec).strip()
    explicit = spec.lower().startswith(_HUB_PREFIXES)
    if explicit:
        spec = spec[len('hf-hub:'):]
    elif Path(spec).expanduser().exists() or spec.startswith(('local-dir:', '/', '.', '~')):
        return None
    repo_id, _, rev = spec.partition('@')
    try:
        if repo_id.count('/') != 1:
            raise HFValidationError(f'{repo_id!r} is not of the form ORG/NAME')
        validate_repo_id(repo_id)
    except HFValidationError as e:
        if explicit:
            raise ValueError(f'hf-hub:{spec} does not name a Hub repo: {e}. Use hf-hub:ORG/NAME[@REVISION].') from e
        return None
    if rev and revision and rev != revision:
        raise ValueError(f'{spec} pins revision {rev!r}, and revision={revision!r} was also given; give one.')
    return HubRef(repo_id, rev or revision or None)


def model_source(spec: PathLike, revision: Optional[str] = None) -> Union[HubRef, Path, None]:
    """``HubRef`` for a Hub spec, the folder of a ``local-dir:`` spec or existing folder, the path of an
    existing file (a training checkpoint), None for a timm registry name."""
    text = os.fspath(spec).strip() if isinstance(spec, (str, os.PathLike)) else spec
    if not isinstance(text, str) or not text:
        raise ValueError(f'a model spec must be a non-empty string or path, got {spec!r}')
    if text.lower().startswith('local-dir:'):
        return Path(text.partition(':')[2]).expanduser()
    path = Path(text).expanduser()
    if path.is_dir() or (path.is_file() and (path.name.endswith(CHECKPOINT_SUFFIXES) or '/' in text)):
        return path
    ref = parse_hub_ref(text, revision)
    if ref is not None:
        return ref
    if isinstance(spec, os.PathLike) or '/' in text or text.startswith(('.', '~')):
        raise ValueError(
            f"'{text}' is neither a local folder, a timm training checkpoint (model_best.pth.tar) nor a Hub "
            f"repo id of the form ORG/NAME.")
    return None
