""" Sombrero and symmetry-breaking analysis of a timm model over a dataset.

In a notebook::

    from timm_u1.analysis import analyze
    report = analyze('tf_efficientnet_lite0.offline_in1k', 'digits', out='runs/analyze/digits')
    report.figures['energy']['centre_concentration']

On the command line (``timm-u1 analyze --help``, :mod:`timm_u1.cli.analyze`)::

    timm-u1 analyze                                   # offline Lite0 on the skimage photos and the digits
    timm-u1 analyze --model resnet18 --data ./my_images --layer layer3 --limit 500

Each dataset gets a folder with ``report.json`` (every figure of :mod:`timm_u1.analysis.stats`, with the
model, layer, input size and dataset), PNG plots (:mod:`timm_u1.analysis.plots`) and ``report.md``. The
statistics stream (memory bounded by the map size), are checkpointed while they run, and an
interrupted run resumes where it stopped when started again with the same settings; with other
settings it is refused, naming what differs (:func:`timm_u1.runs.identity.check_same_run`).

Launched as N processes (``accelerate launch --multi_gpu --num_processes N -m timm_u1.cli analyze
...``), each process streams a contiguous shard of whole batches of the analysis order (checkpointed
and resumed per shard, ``statistics_state.rank{r}of{N}.safetensors``), the statistics are gathered
and merged exactly (:mod:`timm_u1.runs.shard`), and the main process alone holds the folder's lock, runs
the controls (over the same first images as one process) and writes the report.
"""
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..files import atomic_path, write_json, write_text
from .controls import format_value
from ..runs import RunFolder, backbone_fingerprint, check_same_run, settings_diff
from .probe import ActivationProbe
from ..runs.shard import batch_shard, gather, on_main, process_group, same_model
from ..runs.shard import device as process_device
from .stats import RAYLEIGH_QUESTION, SombreroStatistics
from ..version import __version__

__all__ = ['AnalysisReport', 'analyze', 'collect_statistics', 'write_report', 'DEFAULT_DATA', 'DEFAULT_SPLITS']

# the README's main job: a real ImageNet CNN on real photographs and digits, nothing downloaded
DEFAULT_DATA = ('photos', 'digits')
# default split per embedded source: the 450 held-out digits keep the default run to a few minutes
DEFAULT_SPLITS = {'digits': 'test'}
# seconds between checkpoints of the running statistics
CHECKPOINT_EVERY = 20.0
_STATE_FILE = 'statistics_state.safetensors'


@dataclass
class AnalysisReport:
    """What :func:`analyze` returns: the run's settings, the figures and the files written."""
    meta: Dict[str, Any]
    figures: Dict[str, Any]
    statistics: SombreroStatistics = field(repr=False)
    paths: Dict[str, Path] = field(default_factory=dict)
    controls: Dict[str, Any] = field(default_factory=dict)  # timm_u1.analysis.controls.run_controls' section
    verdicts: Dict[str, Any] = field(default_factory=dict)  # per claim, from timm_u1.analysis.controls.verdicts

    def to_dict(self) -> Dict[str, Any]:
        out = {'meta': self.meta, 'figures': self.figures}
        if self.controls:
            out.update(controls=self.controls, verdicts=self.verdicts)
        return out


def _ordered(ds, limit: Optional[int], seed: int):
    """The dataset in a seeded random order, cut to ``limit``: batches then mix classes, which the
    within-batch permutation test needs, and ``limit`` takes a random sample, not the first class."""
    n = len(ds)
    if n == 0:
        raise ValueError('The dataset is empty; nothing to analyse.')
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    if limit is not None:
        if limit < 1:
            raise ValueError(f'limit must be >= 1, got {limit}.')
        order = order[:limit]
    return ds.select(order)


def _save_state(
        path: Path, stats: SombreroStatistics, settings: Dict[str, Any], done: int, unreadable: List[str]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(stats.state_dict(), tmp, metadata={
            'settings': json.dumps(settings, default=str), 'images_done': str(done),
            'unreadable': json.dumps(unreadable)})


class _Checkpoint:
    """``on_batch`` callback that saves the running statistics every ``CHECKPOINT_EVERY`` seconds."""

    def __init__(self, path: Path, settings: Dict[str, Any], offset: int, unreadable: List[str]):
        self.path, self.settings, self.offset = path, settings, offset  # offset: images restored at start
        self.unreadable = unreadable  # the run's list, growing as images are skipped
        self.last = time.monotonic()

    def __call__(self, stats: SombreroStatistics, images_done: int) -> None:
        if time.monotonic() - self.last >= CHECKPOINT_EVERY:
            _save_state(self.path, stats, self.settings, self.offset + images_done, self.unreadable)
            self.last = time.monotonic()


def _load_state(path: Path, stats: SombreroStatistics, settings: Dict[str, Any]) -> Tuple[int, List[str]]:
    """Restore the checkpoint of an unfinished run with the same settings: (images it covered,
    unreadable ones); (0, []) if there is none. A checkpoint of other settings is refused."""
    if not path.is_file():
        return 0, []
    from safetensors import safe_open
    from safetensors.torch import load_file

    start_over = f'delete {path} (or pass --overwrite) to start over, or choose another --output'
    try:
        with safe_open(str(path), framework='pt') as f:
            meta = f.metadata() or {}
        stored = json.loads(meta['settings']) if 'settings' in meta else None
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f'{path} is not a readable analysis checkpoint ({e}); {start_over}.') from e
    check_same_run(stored, settings, path, start_over)
    try:
        done, unreadable = int(meta['images_done']), json.loads(meta['unreadable'])
        stats.load_state_dict(load_file(str(path)))
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f'{path} is damaged ({type(e).__name__}: {e}); {start_over}.') from e
    return done, unreadable


@torch.inference_mode()
def collect_statistics(
        model: nn.Module,
        loader: torch.utils.data.DataLoader,
        layer: Union[None, int, str] = None,
        class_names: Optional[Sequence[str]] = None,
        permutations: int = 999,
        seed: int = 0,
        device: Union[str, torch.device] = 'cpu',
        progress: bool = True,
        stats: Optional[SombreroStatistics] = None,
        on_batch: Optional[Callable[[SombreroStatistics, int], None]] = None,
        unreadable: Optional[List[str]] = None,
) -> SombreroStatistics:
    """Stream ``loader`` through ``layer`` of ``model``.

    Batches are (images, labels) with label -1 for unlabelled images, or (images or None, labels,
    messages) where the messages describe images that could not be read (then skipped).

    Args:
        stats: Statistics to continue (e.g. restored from a checkpoint); a new one otherwise.
        on_batch: Called as ``on_batch(stats, images_done)`` after each batch (checkpointing);
            ``images_done`` counts the unreadable images too.
        unreadable: Collects the messages of the skipped images.
    """
    if stats is None:
        stats = SombreroStatistics(
            num_classes=len(class_names or ()), class_names=class_names, permutations=permutations, seed=seed)
    model.eval().to(device)
    from tqdm.auto import tqdm

    done = 0
    total = len(loader.dataset) if hasattr(loader.dataset, '__len__') else None
    with ActivationProbe(model, layer) as probe, tqdm(
            total=total, unit='img', desc=f'analyze {probe.layer_name}', disable=not progress) as bar:
        first_batch = stats.next_batch  # the loader's first batch's index in the whole analysis order
        for step, (images, labels, *rest) in enumerate(loader):
            skipped = rest[0] if rest else []
            for message in skipped:
                bar.write(f'skipped: {message}')
            if unreadable is not None:
                unreadable.extend(skipped)
            count = (len(images) if images is not None else 0) + len(skipped)
            if images is not None:
                fmap = probe(images.to(device))
                stats.next_batch = first_batch + step  # the batch's index: seeds its permutations
                try:
                    stats.update(fmap, labels)
                except ValueError as e:
                    raise ValueError(
                        f'{type(model).__name__} layer {probe.layer_name!r}, images {done}..{done + count - 1} '
                        f'of this run: {e}') from e
            # a batch of unreadable images only still has its index: shards count batches alike
            stats.next_batch = first_batch + step + 1
            done += count
            bar.update(count)
            if on_batch is not None:
                on_batch(stats, done)
    return stats


def _model_name(model: nn.Module) -> str:
    """'architecture.tag' from the model's pretrained_cfg, as timm names pretrained models."""
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    arch = cfg.get('architecture') or type(model).__name__
    return f"{arch}.{cfg['tag']}" if cfg.get('tag') else arch


def _model_meta(model: nn.Module, spec: Optional[str], layer: str, fmap_shape) -> Dict[str, Any]:
    import timm.data

    data_cfg = timm.data.resolve_model_data_config(model)
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    return {
        'model': spec or _model_name(model),
        'architecture': cfg.get('architecture'),
        'tag': cfg.get('tag'),
        'layer': layer,
        'input_size': list(data_cfg['input_size']),
        'mean': list(data_cfg['mean']),
        'std': list(data_cfg['std']),
        'interpolation': data_cfg.get('interpolation'),
        'crop_pct': data_cfg.get('crop_pct'),
        'map_shape': list(fmap_shape) if fmap_shape is not None else None,
    }


def analyze(
        model: Union[str, nn.Module] = None,
        data: Union[str, Any] = 'digits',
        layer: Union[None, int, str] = None,
        split: Optional[str] = None,
        image_column: Optional[str] = None,
        label_column: Optional[str] = None,
        batch_size: int = 32,
        limit: Optional[int] = None,
        out: Union[None, str, os.PathLike] = None,
        permutations: int = 999,
        seed: int = 0,
        num_workers: int = 0,
        device: Union[None, str, torch.device] = None,
        progress: bool = True,
        pretrained: Optional[bool] = None,
        plots: bool = True,
        overwrite: bool = False,
        controls: str = 'fast',
) -> AnalysisReport:
    """Sombrero and symmetry-breaking statistics of ``layer`` of ``model`` over ``data``.

    Args:
        model: A model spec for :func:`timm_u1.io.factory.create_model_from_spec` (timm or ``u1_`` name,
            ``hf-hub:``, ``local-dir:``, a folder; default: the offline ImageNet EfficientNet-Lite0),
            or a timm model.
        data: A source for :func:`timm_u1.data.load_image_dataset` (``'digits'``, ``'photos'``, an
            image folder, a ``save_to_disk`` folder, a Hub name) or a ``datasets.Dataset`` with an
            ``image`` (and optional ``label``) column.
        layer: None / ``'bottleneck'``, a ``feature_info`` index or name (see :func:`timm_u1.analysis.probe.layer_names`).
        split: Split of ``data`` (default: ``'test'`` for digits, else the source's default).
        image_column, label_column: the columns of ``data`` to read (default: found by type and name;
            see :func:`timm_u1.data.load_image_dataset`).
        limit: Analyse a random sample of this many images.
        out: Folder for ``report.json``, ``report.md`` and the plots; nothing is written when None.
        permutations: Label permutations of the symmetry-breaking test (0 = no test).
        seed: Seeds the image order (batches mix classes) and the permutations.
        device: Default: cpu, or Accelerate's device of the process when launched as several.
        pretrained: For a model spec: load its weights (default: True for hf-hub, local-dir, folders
            and the offline Lite0; False for plain timm names, whose weights need the Hub).
        plots: Write the PNG plots with the report (needs matplotlib).
        overwrite: Start afresh over an unfinished run in ``out`` made with other settings (by
            default such a run is refused, naming what differs).
        controls: ``'none'``, ``'fast'`` or ``'full'``: the controls of :mod:`timm_u1.analysis.controls` (input
            baseline, random networks, channel-order null, decoding) and a verdict per claim, computed
            on the first images of the analysis order (``'fast'``: 192 images, 5 random seeds;
            ``'full'``: every image, 10 seeds).
    """
    from .controls import resolve_level

    level = resolve_level(controls)  # a bad value fails before any model or data is loaded
    from ..data import class_names as dataset_class_names, load_image_dataset, make_loader
    from ..io.factory import DEFAULT_MODEL, create_model_from_spec, default_pretrained

    rank, world = process_group()
    device = device if device is not None else process_device()
    progress = progress and rank == 0
    run_folder = RunFolder(out, '--output') if out is not None else None  # before any work: fail fast
    spec, weights = None, 'as given'
    if model is None or isinstance(model, str):
        spec = model or DEFAULT_MODEL
        model = create_model_from_spec(spec, pretrained=pretrained)
        loads_weights = default_pretrained(spec) if pretrained is None else pretrained
        weights = 'pretrained' if loads_weights else 'random init'
    probe_layer = ActivationProbe(model, layer).layer_name  # validate the layer before reading any data
    if isinstance(data, str):
        source = data
        split = split if split is not None else DEFAULT_SPLITS.get(data)
        ds = load_image_dataset(data, split=split, image_column=image_column, label_column=label_column)
    else:
        source, ds = data.info.dataset_name or 'dataset', data
    names = dataset_class_names(ds)
    ordered = _ordered(ds, limit, seed)
    shard = batch_shard(len(ordered), batch_size, rank, world)  # every image when one process

    def loader_from(start: int, stop: int = shard.stop) -> torch.utils.data.DataLoader:
        # unreadable images are skipped and reported instead of ending the run
        return make_loader(ordered.select(range(start, stop)), model, batch_size=batch_size,
                           num_workers=num_workers, skip_unreadable=True)

    # the weights' fingerprint is part of the run's identity: a retrained model never resumes an old run
    settings = {
        'model': spec or _model_name(model), 'layer': probe_layer, 'data': source, 'split': split,
        'image_column': image_column, 'label_column': label_column,
        'images': len(ordered), 'batch_size': batch_size, 'permutations': permutations, 'seed': seed,
        'timm_u1': __version__,
        # every process analyses the main process's weights (random initialisations differ)
        'weights': same_model(model, lambda m: backbone_fingerprint(m, include_head=True)),
    }
    if world > 1:
        settings['shard'] = [rank, world]
    statistics_args = dict(num_classes=len(names or ()), class_names=names, permutations=permutations, seed=seed)
    extent = None
    if shard.start > 0 and len(shard):
        # the hue-plane histogram's extent comes from the first batch of the whole order
        extent = _first_batch_extent(model, loader_from(0, len(ordered)), probe_layer, device)
    stats = SombreroStatistics(density_extent=extent, **statistics_args)
    stats.next_batch = shard.start // batch_size  # seeds the permutations as in a one-process run
    on_batch, resumed, unreadable = None, 0, []
    if run_folder is not None:
        # one run per folder: a second one is refused, not raced; only the main process holds the lock
        on_main(run_folder.acquire)
    try:
        if run_folder is not None:
            state_path = run_folder.path / _state_file(rank, world)
            if overwrite:
                state_path.unlink(missing_ok=True)
            resumed, unreadable = _load_state(state_path, stats, settings)
            if resumed:
                print(f'resuming {source}: {resumed} of {len(shard)} images already analysed ({state_path})')
            on_batch = _Checkpoint(state_path, settings, resumed, unreadable)

        if resumed < len(shard):
            collect_statistics(model, loader_from(shard.start + resumed), probe_layer, names, device=device,
                               progress=progress, stats=stats, on_batch=on_batch, unreadable=unreadable)
        if world > 1:
            parts = gather((stats, unreadable, settings))  # in process order, i.e. in the analysis order
            for r, (_, _, theirs) in enumerate(parts):
                diffs = settings_diff({**settings, 'shard': None}, {**theirs, 'shard': None})
                if diffs:
                    raise ValueError(f'Process {r} analysed with other settings than process {rank}: {diffs}.')
            stats = SombreroStatistics(**statistics_args).merge([part for part, _, _ in parts])
            unreadable = [message for _, messages, _ in parts for message in messages]
        if stats.images == 0 and unreadable:
            raise ValueError(f'None of the {len(ordered)} images of {source!r} could be read; the first: {unreadable[0]}')
        figures = stats.result()
        meta = _model_meta(model, spec, probe_layer, stats.map_shape)
        meta.update({
            'weights': weights, 'data': source, 'split': split, 'images': stats.images, 'limit': limit,
            'unreadable': unreadable, 'labelled': names is not None, 'classes': len(names or ()),
            'batch_size': batch_size, 'permutations': stats.permutations, 'seed': seed, 'timm_u1_version': __version__,
        })
        if world > 1:
            meta['processes'] = world
        report = AnalysisReport(meta, figures, stats)
        if rank != 0:
            return report  # the main process runs the controls and writes the files
        if level is not None:
            # on the main process only, over the same first images of the analysis order as one process
            report.controls, report.verdicts = _run_controls(
                model, ordered, probe_layer, names, controls, level, batch_size, seed, device, progress)
            meta['controls'] = controls
        if run_folder is not None:
            report.paths = write_report(report, run_folder.path, plots=plots)
            for r in range(world):  # the report now holds everything the checkpoints did
                (run_folder.path / _state_file(r, world)).unlink(missing_ok=True)
        return report
    finally:
        if run_folder is not None and rank == 0:
            run_folder.release()


def _state_file(rank: int, world: int) -> str:
    """The checkpoint of one process's shard (one file when a single process runs)."""
    return _STATE_FILE if world == 1 else _STATE_FILE.replace('.safetensors', f'.rank{rank}of{world}.safetensors')


@torch.inference_mode()
def _first_batch_extent(model: nn.Module, loader, layer: str, device) -> Optional[float]:
    """The hue-plane extent a one-process run takes from its first batch with readable images."""
    model.eval().to(device)
    with ActivationProbe(model, layer) as probe:
        for images, labels, *_ in loader:
            if images is not None:
                first = SombreroStatistics(permutations=0)
                first.update(probe(images.to(device)))
                return first.extent
    return None


def _run_controls(model, ordered, layer, names, name, level, batch_size, seed, device, progress):
    """The controls on the first images of the analysis order, and the per-claim verdicts."""
    import timm.data

    from .controls import run_controls, verdicts
    from ..data import make_loader

    count = len(ordered) if level.images is None else min(level.images, len(ordered))
    loader = make_loader(ordered.select(range(count)), model, batch_size=batch_size, skip_unreadable=True)
    cfg = timm.data.resolve_model_data_config(model)
    section = run_controls(model, loader, layer, names, name, mean=cfg['mean'], std=cfg['std'], seed=seed,
                           device=device, progress=progress)
    return section, verdicts(section)


# --- report files -------------------------------------------------------------------------------

def write_report(report: AnalysisReport, out: Union[str, os.PathLike], plots: bool = True) -> Dict[str, Path]:
    """Write ``report.json``, the PNG plots and ``report.md`` into ``out``; returns the paths."""
    out = Path(out)
    paths: Dict[str, Path] = {'report.json': out / 'report.json'}
    write_json(paths['report.json'], report.to_dict())  # the results first: a figure never costs them
    if plots:
        from .plots import plot_report

        title = f"{report.meta['model']} / {report.meta['layer']} / {report.meta['data']}"
        paths.update(plot_report(report.figures, out, title))
        if report.controls:
            from .plots import plot_controls

            controls = plot_controls(report.controls, report.verdicts, out / 'controls.png', title)
            if controls is not None:
                paths['controls'] = controls
    paths['report.md'] = out / 'report.md'
    write_text(paths['report.md'], render_markdown(report, {k: p.name for k, p in paths.items()}))
    return paths


_PLOT_CAPTIONS = {
    'energy_map': 'Mean energy map',
    'sombrero': 'Energy surface (sombrero)',
    'radial_profile': 'Radial energy profile',
    'hue_density': 'Hue-plane density of (a, b)',
    'hue_polar': 'Activation hue per class',
    'centroid_polar': 'Energy-centroid angle per class',
    'controls': 'Trained model beside its controls',
}


def render_markdown(report: AnalysisReport, files: Dict[str, str]) -> str:
    """``report.md``: settings, a table of the figures, the plots and the per-class statistics."""
    m, f = report.meta, report.figures
    lines = [
        f"# U(1) analysis: {m['model']} on {m['data']}",
        '',
        '| setting | value |', '|---|---|',
    ]
    for key in ('model', 'weights', 'architecture', 'layer', 'input_size', 'map_shape', 'data', 'split', 'images',
                'classes', 'permutations', 'seed', 'timm_u1_version'):
        lines.append(f'| {key} | {format_value(m.get(key))} |')
    e = f['energy']
    rows = [('mean energy', e['mean'])]
    if 'centre_concentration' in e:
        rows += [
            ('centre concentration (energy share within r <= R/2 / location share)', e['centre_concentration']),
            ('mean per-image centre concentration', e['image_concentration_mean']),
            ('share of images with concentration > 1', e['images_concentrated_share']),
        ]
    if 'centroid_of_mean_map' in e:
        c = e['centroid_of_mean_map']
        rows += [('centroid of the mean map: length (1 = edge), angle (deg)',
                  f"{format_value(c['length'])}, {format_value(c['angle_deg'])}"),
                 ('mean per-image centroid length', e['image_centroid_mean']['length'])]
    if 'hue' in f:
        h = f['hue']['all']
        rows += [('activation hue: mean direction (deg), R (energy-weighted)',
                  f"{format_value(h['mean_direction_deg'])}, {format_value(h['resultant_length'])}"),
                 ('activation hue: R over images, Rayleigh log10 p (uniformity over images, not class dependence)',
                  f"{format_value(h['image_resultant_length'])}, {format_value(h['rayleigh_log10_p'])}"),
                 ('hue-plane density peak: chroma (ring index, 0 = at the origin)',
                  f"{format_value(f['hue']['ring_profile']['peak_chroma'])} ({f['hue']['ring_profile']['peak_ring']})"),
                 ('share of achromatic locations', f['hue']['achromatic_share'])]
    if 'centroid_angle' in f:
        a = f['centroid_angle']['all']
        rows.append(('centroid angle φ: mean direction (deg), R, Rayleigh log10 p',
                     f"{format_value(a['mean_direction_deg'])}, {format_value(a['resultant_length'])}, {format_value(a['rayleigh_log10_p'])}"))
    for name, test in f.get('permutation_test', {}).items():
        rows.append((f'permutation test of class means, {name}: T (null mean), p',
                     f"{format_value(test['statistic'])} ({format_value(test.get('null_mean'))}), {format_value(test['p_value'])}"))
    lines += ['', '## Figures', '', '| figure | value |', '|---|---|']
    lines += [f'| {k} | {format_value(v)} |' for k, v in rows]
    if f['skipped']:
        lines += ['', '## Skipped', '']
        lines += [f'- **{k}**: {v}' for k, v in f['skipped'].items()]
    if m.get('unreadable'):
        lines += ['', f"## Unreadable images ({len(m['unreadable'])}, left out)", '']
        lines += [f'- {message}' for message in m['unreadable']]
    if report.controls:
        from .controls import render_markdown as controls_markdown

        lines += [''] + controls_markdown(report.controls, report.verdicts)
    plots = [k for k in _PLOT_CAPTIONS if k in files]
    if plots:
        lines += ['', '## Plots', '']
        lines += [f'![{_PLOT_CAPTIONS[k]}]({files[k]})' for k in plots]
    hue_classes = f.get('hue', {}).get('classes')
    phi_classes = f.get('centroid_angle', {}).get('classes')
    if hue_classes or phi_classes:
        lines += ['', '## Per class', '',
                  '| class | images | hue mean (deg) | hue R | hue Rayleigh log10 p | φ mean (deg) | φ R | φ Rayleigh log10 p |',
                  '|---|---|---|---|---|---|---|---|']
        n = len(hue_classes or phi_classes)
        for i in range(n):
            hc = hue_classes[i] if hue_classes else {}
            pc = phi_classes[i] if phi_classes else {}
            cls = hc.get('class', pc.get('class'))
            count = hc.get('images', pc.get('images'))
            lines.append(
                f"| {cls} | {count} | {format_value(hc.get('mean_direction_deg'))} | {format_value(hc.get('resultant_length'))} | "
                f"{format_value(hc.get('rayleigh_log10_p'))} | {format_value(pc.get('mean_direction_deg'))} | "
                f"{format_value(pc.get('resultant_length'))} | {format_value(pc.get('rayleigh_log10_p'))} |")
    lines += ['', 'Angles in degrees; R is the mean resultant length (0 = uniform, 1 = one direction). '
              'Definitions: docs/math.md and timm_u1.analysis.stats.', '', RAYLEIGH_QUESTION, '']
    return '\n'.join(lines)
