""" One resumable, locked, shardable pass over a dataset: the skeleton of ``memory build`` (and of any
job that streams a fixed order of images into a mergeable accumulator).

A pass reads the positions ``0 .. total - 1`` of a dataset in a fixed order of whole batches. Under
``accelerate launch`` each process takes a contiguous run of whole batches
(:func:`timm_u1.runs.shard.batch_shard`), so every process sees exactly the batches of a
one-process run. Each process checkpoints its accumulator (``state_dict()``) and how many images it
has done into one safetensors file, atomically, every ``every`` seconds; a killed pass started
again with the same identity resumes after the images its checkpoint holds, and one with another
identity is refused (:func:`timm_u1.runs.identity.check_same_run`), naming what differs. The main
process alone holds the folder's lock; :meth:`StreamPass.gather` hands it every process's
accumulator in data order to merge, and :meth:`StreamPass.finish` removes the checkpoints once the
caller has written its result::

    identity = pass_identity(settings, data=ds, model=model)   # settings + what the data and weights are
    with StreamPass(out, '.my-job', len(ds), batch_size, identity) as stream:
        stream.restore(acc)                                     # acc.load_state_dict(checkpoint), if any
        for batch in loader_over(ds.select(stream.remaining)):  # whole batches, this process's shard
            acc.update(batch)
            stream.advance(acc, len(batch))                     # checkpoint when `every` seconds passed
        parts = stream.gather(acc)                              # main process: [acc of rank 0, 1, ...]
        if parts is not None:
            write(merge(parts))
            stream.finish()

The accumulator is any object with ``state_dict() -> Dict[str, Tensor]`` and
``load_state_dict(Dict[str, Tensor])``; JSON-able ``extras`` (e.g. the names of unreadable images)
are checkpointed beside it.
"""
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Union

import torch

from ..errors import ResumeMismatchError
from ..files import atomic_path
from .folder import RunFolder
from .identity import backbone_fingerprint, check_same_run, settings_diff
from .shard import batch_shard, gather, on_main, process_group, same_model

__all__ = ['StreamPass', 'Stateful', 'pass_identity', 'STATE_FORMAT', 'CHECKPOINT_EVERY']

_logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
STATE_FORMAT = 'timm_u1.stream'
CHECKPOINT_EVERY = 60.0  # seconds between checkpoints: minutes of work lost at most, little time spent writing


class Stateful(Protocol):
    """What a pass checkpoints: an accumulator whose state is a dict of tensors."""

    def state_dict(self) -> Dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None: ...


def pass_identity(
        settings: Mapping[str, Any],
        data: Any = None,
        model: Optional[torch.nn.Module] = None,
        include_head: bool = False,
) -> Dict[str, Any]:
    """A pass's identity: ``settings`` plus what the data and the weights are.

    ``data_fingerprint`` (:func:`timm_u1.data.data_fingerprint`: image bytes, or path, size and
    modification time of image files, and labels) notices images replaced under the same names;
    ``model_fingerprint`` (:func:`backbone_fingerprint`, the classifier left out unless
    ``include_head``) notices other weights. Launched as several processes, every process takes the
    main process's weights first (:func:`timm_u1.runs.shard.same_model`).
    """
    identity = dict(settings)
    if data is not None:
        from ..data import data_fingerprint

        identity['data_fingerprint'] = data_fingerprint(data)
    if model is not None:
        process_group()  # joins the process group as timm_u1 does (on CPU too); same_model's gather would join without
        identity['model_fingerprint'] = same_model(model, lambda m: backbone_fingerprint(m, include_head=include_head))
    return identity


class StreamPass:
    """A resumable, locked, shardable pass over ``total`` images in batches of ``batch_size``.

    Args:
        folder: the run folder (a :class:`RunFolder` or a path) that holds the checkpoints and is locked
            by the main process while the pass runs (unless the caller holds its lock already, and
            keeps it); None: nothing is checkpointed or locked.
        name: file stem of the checkpoints (``NAME.safetensors``; ``NAME.rank{r}of{n}.safetensors`` per
            process when launched as n); a leading dot keeps them out of published folders.
        total: number of images of the whole pass.
        batch_size: images per batch; shards are whole batches.
        identity: what must match for a checkpoint to be resumed (:func:`pass_identity`); ``images``,
            ``batch_size`` and the shard are added.
        every: seconds between checkpoints (0: after every batch; None: only when asked).
        overwrite: remove the checkpoints of an earlier pass (any identity, any number of processes) first.
    """

    def __init__(
            self,
            folder: Union[RunFolder, PathLike, None],
            name: str,
            total: int,
            batch_size: int,
            identity: Mapping[str, Any],
            every: Optional[float] = CHECKPOINT_EVERY,
            overwrite: bool = False,
    ):
        if total < 0 or batch_size < 1:
            raise ValueError(f'a pass needs total >= 0 and batch_size >= 1, got {total} and {batch_size}.')
        if every is not None and not every >= 0:
            raise ValueError(f'every must be None or a number of seconds >= 0, got {every}.')
        self.folder = folder if isinstance(folder, RunFolder) or folder is None else RunFolder(folder, '--out')
        self.name, self.total, self.batch_size, self.every, self.overwrite = name, total, batch_size, every, overwrite
        self.rank, self.world = process_group()
        self.shard = batch_shard(total, batch_size, self.rank, self.world)
        self.identity = {**identity, 'images': total, 'batch_size': batch_size}
        self.done = 0  # images of this process's shard already in the accumulator
        self._acquired = False  # whether this pass took the folder's lock (and so releases it)
        self._last_save = time.monotonic()

    # -------------------------------------------------------------------------------- files

    @property
    def path(self) -> Optional[Path]:
        """This process's checkpoint file (None without a folder)."""
        if self.folder is None:
            return None
        suffix = '' if self.world == 1 else f'.rank{self.rank}of{self.world}'
        return self.folder.path / f'{self.name}{suffix}.safetensors'

    def checkpoints(self) -> List[Path]:
        """Every checkpoint of this pass's name in the folder, whatever number of processes wrote it."""
        if self.folder is None:
            return []
        names = {f'{self.name}.safetensors'}
        return sorted(p for p in self.folder.path.glob(f'{self.name}*.safetensors')
                      if p.name in names or p.name[len(self.name):].startswith('.rank'))

    def __enter__(self) -> 'StreamPass':
        if self.folder is not None:
            on_main(self._start)  # every process waits for the main one: the lock, then the old files
        return self

    def __exit__(self, *exc) -> None:
        if self._acquired:
            self.folder.release()
            self._acquired = False

    def _start(self) -> None:
        if not self.folder.held:  # a caller may hold it already, to refuse a second run before loading anything
            self.folder.acquire()
            self._acquired = True
        try:
            mine = {self.folder.path / f'{self.name}{"" if self.world == 1 else f".rank{r}of{self.world}"}.safetensors'
                    for r in range(self.world)}
            others = [p for p in self.checkpoints() if p not in mine]
            if self.overwrite:
                for p in self.checkpoints():
                    p.unlink(missing_ok=True)
            elif others:
                raise ResumeMismatchError(
                    f'{self.folder.path} holds checkpoints of an unfinished run with another number of processes '
                    f'({", ".join(p.name for p in others)}); rerun it as it was launched to resume it, or pass '
                    f'--overwrite (overwrite=True) to start over with {self.world}.')
        except BaseException:
            self.__exit__()
            raise

    # ------------------------------------------------------------------------------- resume

    @property
    def remaining(self) -> range:
        """Positions this process still has to read: the rest of its shard after the checkpoint."""
        return range(self.shard.start + self.done, self.shard.stop)

    def restore(self, state: Stateful) -> Dict[str, Any]:
        """Load this process's checkpoint into ``state`` when there is one of the same identity.

        Returns the extras it recorded ({} when there is none) and sets :attr:`done`.

        Raises:
            ResumeMismatchError: the checkpoint is of another identity (it is left as it was).
            ValueError: the checkpoint is damaged, naming the field.
        """
        path = self.path
        if path is None or not path.is_file():
            return {}
        from safetensors import safe_open
        from safetensors.torch import load_file

        start_over = f'pass --overwrite (overwrite=True) to start over, or write to another folder'
        try:
            with safe_open(str(path), framework='pt') as f:
                meta = f.metadata() or {}
        except (OSError, ValueError, RuntimeError) as e:
            raise ValueError(f'{path} is not a readable checkpoint ({e}); {start_over}.') from e
        identity, done, extras = _check_state_metadata(meta, path, len(self.shard), start_over)
        check_same_run(identity, {**self.identity, 'shard': [self.rank, self.world]}, path, start_over)
        try:
            state.load_state_dict(load_file(str(path)))
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise ValueError(f'{path}: the checkpoint does not fit ({e}); {start_over}.') from e
        self.done = done
        _logger.debug('restored %s: %d of %d images done', path, done, len(self.shard))
        return extras

    def advance(self, state: Stateful, images: int, extras: Optional[Dict[str, Any]] = None) -> None:
        """Count ``images`` more done (after they are in ``state``); checkpoint when ``every`` seconds passed."""
        self.done += images
        if self.done > len(self.shard):
            raise ValueError(f'{self.done} images done of a shard of {len(self.shard)}: the loader read past it.')
        due = self.every is not None and time.monotonic() - self._last_save >= self.every
        if due and self.done < len(self.shard):
            self.checkpoint(state, extras)

    def checkpoint(self, state: Stateful, extras: Optional[Dict[str, Any]] = None) -> None:
        """Write this process's checkpoint now (atomically: a kill leaves the previous one)."""
        if self.path is None:
            return
        from safetensors.torch import save_file

        metadata = {
            'format': STATE_FORMAT,
            'identity': json.dumps({**self.identity, 'shard': [self.rank, self.world]}, default=str),
            'images_done': str(self.done),
            'extras': json.dumps(extras or {}),
        }
        tensors = {k: v.contiguous() for k, v in state.state_dict().items()}
        with atomic_path(self.path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        self._last_save = time.monotonic()

    # ------------------------------------------------------------------------------- finish

    def gather(self, state: Any, extras: Optional[Dict[str, Any]] = None) -> Optional[List[Any]]:
        """Every process's ``state`` in process (= data) order on the main process; None on the others.

        Launched as several processes, each first checkpoints its finished shard with its ``extras`` (a
        failure while merging then loses no shard) and the identities are compared.
        """
        if self.world == 1:
            return [state]
        self.checkpoint(state, extras)
        parts = gather((state, self.identity))
        for r, (_, theirs) in enumerate(parts):
            diffs = settings_diff(self.identity, theirs)
            if diffs:
                raise ValueError(f'Process {r} ran with another identity than process {self.rank}: {diffs}.')
        return [part for part, _ in parts] if self.rank == 0 else None

    def finish(self) -> None:
        """Remove every process's checkpoint (on the main process, once the result is written)."""
        if self.rank == 0:
            for path in self.checkpoints():
                path.unlink(missing_ok=True)

    def progress(self, desc: str, enabled: bool = True, unit: str = 'img'):
        """A tqdm bar over this process's shard, starting at the images already done (main process only)."""
        from tqdm.auto import tqdm

        return tqdm(total=len(self.shard), initial=self.done, desc=desc, unit=unit,
                    disable=not enabled or self.rank != 0)


def _check_state_metadata(
        meta: Mapping[str, str], path: Path, shard_size: int, start_over: str) -> tuple:
    """(identity, images done, extras) of a checkpoint's metadata, each field checked."""
    def bad(field: str, what: str) -> ValueError:
        return ValueError(f'{path}: checkpoint field "{field}" {what}; the file is damaged. {start_over[0].upper()}'
                          f'{start_over[1:]}.')

    if meta.get('format') != STATE_FORMAT:
        raise bad('format', f'is {meta.get("format")!r}, not {STATE_FORMAT!r}')
    fields = {}
    for field, kind in (('identity', dict), ('extras', dict)):
        try:
            fields[field] = json.loads(meta[field])
        except (KeyError, TypeError, ValueError):
            raise bad(field, 'is missing or not JSON') from None
        if not isinstance(fields[field], kind):
            raise bad(field, f'must be a JSON {kind.__name__}')
    text = meta.get('images_done', '')
    if not text.isdigit() or int(text) > shard_size:
        raise bad('images_done', f'must be an integer in [0, {shard_size}], got {text!r}')
    return fields['identity'], int(text), fields['extras']
