""" Building a memory over a labelled dataset: one resumable, locked, shardable pass
(:class:`timm_u1.runs.StreamPass`) of whole batches through the frozen backbone.

The pass checkpoints the memory's exact state (:meth:`MemoryStorage.state_dict`) in
``FOLDER/.memory-build.safetensors`` every ``save_every`` seconds; started again with the same
settings, data (its fingerprint) and weights, it resumes after the images the checkpoint holds,
and with anything else it is refused, naming what differs. Under ``accelerate launch`` each process
builds a contiguous shard of whole batches and the main process merges them in order. Because the
batches are those of one process and the sums are exact integers, a resumed or sharded build is
bitwise the memory of an uninterrupted one-process build.
"""
import logging
import os
from typing import Any, Dict, Optional, Union

from torch import nn

from ..runs import RunFolder
from ..runs.shard import on_main
from ..runs.stream import CHECKPOINT_EVERY, StreamPass, pass_identity
from .persistence import settle
from .schema import BUILD_STATE, MEMORY_CONFIG

__all__ = ['stream_build', 'BUILD_STATE']

_logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def stream_build(
        memory,
        model: nn.Module,
        dataset: Any,
        folder: Union[RunFolder, PathLike],
        settings: Optional[Dict[str, Any]] = None,
        batch_size: int = 64,
        num_workers: int = 0,
        save_every: Optional[float] = CHECKPOINT_EVERY,
        overwrite: bool = False,
        progress: bool = True,
):
    """Stream ``dataset`` (a ``datasets.Dataset`` with ``image`` and ``label`` columns) into ``memory``
    and save it in ``folder``, resumably (see the module docstring).

    Args:
        settings: what else identifies the build (e.g. the data source and split, for the message of a
            refused resume); the memory's own settings, the data's and the weights' fingerprints and
            the batch size are always part of it.
        save_every: seconds between checkpoints (0: after every batch; None: none).
        overwrite: replace a finished memory, or the checkpoints of another build, in ``folder``.

    Returns:
        ``memory``, holding the whole dataset, on the main process; None on the others.
    """
    memory.check_backbone(model)
    identity = pass_identity({**(settings or {}), 'memory': memory.merge_settings()}, data=dataset, model=model)
    with StreamPass(folder, BUILD_STATE, len(dataset), batch_size, identity, every=save_every,
                    overwrite=overwrite) as stream:
        on_main(lambda: _refuse_finished(stream, overwrite))
        stream.restore(memory)
        if stream.done:
            _logger.info('resuming the build in %s after %d of %d images', stream.folder.path, stream.done,
                         len(stream.shard))
        _fill(memory, model, dataset, stream, batch_size, num_workers, progress)
        parts = stream.gather(memory)
        if parts is None:
            return None
        if len(parts) > 1:
            memory.load_state_dict({})
            memory.merge(parts)
        memory.save_pretrained(stream.folder.path)
        stream.finish()
    return memory


def _refuse_finished(stream: StreamPass, overwrite: bool) -> None:
    """A folder that holds a finished memory and no checkpoint is not built into again without ``overwrite``."""
    folder = stream.folder.path
    settle(folder)  # a save killed before its last rename is finished first
    if overwrite or stream.checkpoints() or not (folder / MEMORY_CONFIG).is_file():
        return  # a checkpoint: resumed (also when only the memory's save remained to be done)
    raise ValueError(
        f'{folder} already holds a memory; pass --overwrite (overwrite=True) to replace it, or write to another '
        f'folder.')


def _fill(memory, model: nn.Module, dataset: Any, stream: StreamPass, batch_size: int, num_workers: int,
          progress: bool) -> None:
    """Add this process's remaining batches to ``memory``, checkpointing through ``stream``."""
    from ..data import make_loader

    if not len(stream.remaining):
        return
    loader = make_loader(dataset.select(stream.remaining), memory.data_config, batch_size, num_workers)
    with stream.progress('memory build', enabled=progress) as bar:
        for images, labels in loader:
            memory.add_features(memory._extract(model, images), labels)
            stream.advance(memory, len(labels))
            bar.update(len(labels))

