"""The Accelerator of a run, and what it really runs: precision, compilation, gradient accumulation and
processes, each checked against what the run asked for (a run records what ran, or is refused)."""
import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from .config import TrainConfig
from .metrics import LOGS_NAME, resolve_trackers

__all__ = ['create_accelerator', 'resolve_mixed_precision', 'what_runs']


def resolve_mixed_precision(choice: Optional[str]) -> Optional[str]:
    """What to pass to ``Accelerator(mixed_precision=...)``: None lets Accelerate decide (the launcher's
    ``--mixed_precision``, ``accelerate config``, ``ACCELERATE_MIXED_PRECISION``)."""
    if choice != 'auto':
        return choice
    if torch.cuda.is_available():
        return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
    return 'no'  # CPU autocast is bf16 only, and slower than fp32 on most CPUs


def create_accelerator(args: TrainConfig) -> Any:
    """An Accelerator for ``args``: seedable data order, the run folder as its project (trackers write to
    ``OUTPUT/logs``), and a refusal of anything that would run otherwise than the run records."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import ProjectConfiguration

    _check_launcher_accumulation(args.grad_accum)
    trackers = resolve_trackers(args.log_with)
    out = Path(args.output)
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(args.mixed_precision),
        gradient_accumulation_steps=args.grad_accum,
        dynamo_backend=args.torchcompile,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / LOGS_NAME)),
        # a sampler seeded by (seed, epoch) gives every process, and a resumed run, the same order
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    _check_world_size(accelerator)
    _check_what_runs(args, accelerator)
    return accelerator


def what_runs(accelerator: Any) -> Dict[str, Any]:
    """Precision, torch.compile backend, gradient accumulation and processes as the accelerator runs them."""
    # `native_amp` is False when Accelerate keeps full precision (fp16 asked on a CPU): that is what runs
    precision = accelerator.mixed_precision if accelerator.native_amp else 'no'
    backend = accelerator.state.dynamo_plugin.backend
    return dict(mixed_precision=precision, compile=str(getattr(backend, 'value', backend)).lower(),
                gradient_accumulation_steps=accelerator.gradient_accumulation_steps,
                num_processes=accelerator.num_processes)


def _check_launcher_accumulation(grad_accum: int) -> None:
    # Accelerate lets this variable win over the gradient_accumulation_steps it is given
    launched = os.environ.get('ACCELERATE_GRADIENT_ACCUMULATION_STEPS')
    if launched is not None and launched.strip() != str(grad_accum):
        raise ValueError(
            f'ACCELERATE_GRADIENT_ACCUMULATION_STEPS={launched} (set by accelerate launch '
            f'--gradient_accumulation_steps or accelerate config) would override --grad-accum {grad_accum}; '
            f'pass --grad-accum {launched}, or launch without it.')


def _check_what_runs(args: TrainConfig, accelerator: Any) -> None:
    ran = what_runs(accelerator)
    if accelerator.mixed_precision != ran['mixed_precision']:
        raise ValueError(
            f'mixed precision {accelerator.mixed_precision} does not run on {accelerator.device.type} (Accelerate '
            f'would compute in full precision); pass --mixed-precision no, or bf16 on a CPU.')
    if ran['gradient_accumulation_steps'] != args.grad_accum:
        raise ValueError(f'Accelerate accumulates {ran["gradient_accumulation_steps"]} steps, not --grad-accum '
                         f'{args.grad_accum}; start a new process, or pass --grad-accum '
                         f'{ran["gradient_accumulation_steps"]}.')
    if args.torchcompile and ran['compile'] != args.torchcompile.lower():
        raise ValueError(f'--torchcompile {args.torchcompile}: Accelerate runs backend {ran["compile"]} (this '
                         f"process's Accelerator was made before with it); start a new process.")


def _check_world_size(accelerator: Any) -> None:
    """Refuse a launch whose processes do not form one run (each would train alone and write the output)."""
    launched = os.environ.get('WORLD_SIZE')
    if launched and launched.isdigit() and int(launched) != accelerator.num_processes:
        raise RuntimeError(
            f'Launched as {launched} processes (WORLD_SIZE={launched}) but Accelerate sees '
            f'{accelerator.num_processes}: each process would train alone and all would write the same '
            f'--output. Without GPUs, run the processes on the CPU: ACCELERATE_USE_CPU=1 accelerate launch '
            f'--multi_gpu --num_processes {launched} -m timm_u1.cli.train ... (gloo); with GPUs, check that '
            f'every process sees one (CUDA_VISIBLE_DEVICES, `accelerate config`).')
