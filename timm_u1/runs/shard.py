""" Sharding analysis and memory building across the processes of ``accelerate launch``.

``accelerate launch --multi_gpu --num_processes N -m timm_u1.cli analyze ...`` (or ``memory build``)
starts N copies of the command. Each takes a contiguous shard of the images, streams it, and the
partial statistics or memories are gathered (``accelerate.utils.gather_object``) and merged
exactly (:meth:`timm_u1.analysis.sombrero.SombreroStatistics.merge`,
:meth:`timm_u1.memory.AnglePrototypeMemory.merge`); only the main process holds the run-folder lock
and writes files. Run as one process, every helper here is a no-op.
"""
import os
from typing import Any, Callable, List, Tuple, TypeVar

__all__ = ['process_group', 'device', 'batch_shard', 'gather', 'on_main', 'barrier', 'leave_process_group']

T = TypeVar('T')


def _world_size() -> int:
    return int(os.environ.get('WORLD_SIZE', '1'))


def _state():
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Accelerator reads ACCELERATE_USE_CPU itself; PartialState must be told (else: no gloo group on CPU)
    return PartialState(cpu=parse_flag_from_env('ACCELERATE_USE_CPU'))


def process_group() -> Tuple[int, int]:
    """(this process's index, number of processes); (0, 1) unless launched as several processes.

    Raises:
        RuntimeError: launched as several processes that Accelerate cannot join into one group
            (on CPU it needs ``ACCELERATE_USE_CPU=1``).
    """
    world = _world_size()
    if world <= 1:
        return 0, 1
    state = _state()
    if state.num_processes != world:
        raise RuntimeError(
            f'Launched as {world} processes, but Accelerate joined {state.num_processes}; on a machine '
            f'without GPUs set ACCELERATE_USE_CPU=1 (gloo), e.g. ACCELERATE_USE_CPU=1 accelerate launch '
            f'--multi_gpu --num_processes {world} -m timm_u1.cli ...')
    return state.process_index, state.num_processes


def device() -> Any:
    """The device Accelerate gives this process (``cuda:LOCAL_RANK`` on a GPU node, else cpu)."""
    if _world_size() <= 1:
        return 'cpu'
    return _state().device


def batch_shard(total: int, batch_size: int, index: int, count: int) -> range:
    """Image positions of shard ``index`` of ``count``: a contiguous run of whole batches.

    Whole batches, so that every process sees exactly the batches of a one-process run (the
    label-permutation test permutes within batches), the last batch of a shard being short only
    at the very end.
    """
    batches = -(-total // batch_size)
    first, last = index * batches // count, (index + 1) * batches // count
    return range(min(first * batch_size, total), min(last * batch_size, total))


def gather(obj: T) -> List[T]:
    """``obj`` of every process, in process order (to every process); ``[obj]`` as one process."""
    if _world_size() <= 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])  # a list per process, flattened


def barrier() -> None:
    if _world_size() > 1:
        _state().wait_for_everyone()


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the main process only; if it fails there, every process raises (none waits forever)."""
    index, count = process_group()
    if count == 1:
        return fn()
    import torch.distributed as dist

    result, error = None, None
    if index == 0:
        try:
            result = fn()
        except Exception as e:  # broadcast, then re-raise below
            error = e
    message = [f'{type(error).__name__}: {error}' if error is not None else None]
    dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    if message[0] is not None:
        raise RuntimeError(f'the main process failed: {message[0]}')
    return result


def same_model(model: Any, fingerprint: Callable[[Any], str]) -> str:
    """Make every process hold the main process's weights; returns the (common) fingerprint.

    Randomly initialised models (plain timm names without --pretrained) differ from process to
    process; their shards would be statistics of different networks, so the main process's weights
    are broadcast to all. Loaded weights already agree and are left alone.
    """
    mine = fingerprint(model)
    if _world_size() <= 1 or len(set(gather(mine))) == 1:
        return mine
    import torch.distributed as dist

    where = device()  # NCCL broadcasts device tensors only
    for tensor in model.state_dict().values():
        sent = tensor.detach().to(where)
        dist.broadcast(sent, src=0)
        tensor.copy_(sent)  # state_dict() tensors share the model's storage
    mine = fingerprint(model)
    if len(set(gather(mine))) != 1:
        raise RuntimeError('The processes still hold different model weights after broadcasting the main one.')
    return mine


def leave_process_group() -> None:
    """Destroy the process group at the end of a launched command. Left to the interpreter's exit, a
    gloo group's threads can abort a process after its work is done ("terminate called without an
    active exception", exit -6: seen once in tests/test_scale.py's two-process analyze)."""
    import torch.distributed as dist

    if _world_size() > 1 and dist.is_available() and dist.is_initialized():
        _state().destroy_process_group()

