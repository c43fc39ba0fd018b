""" The filter analysis' figures: the filters with their fits, the fit errors and indices beside the
controls, the (nx, ny) scatter and the orientation histogram; and the V1 analysis' figures: the
pre-filter beside its LoG fit, the lateral kernel's tuning curves, co-axial maps, association field
beside the co-circularity model, and the kernel beside the direction-process kernel. Each writes one
PNG through :mod:`timm_u1.figures` and is an optional figure: a failure is a warning and None, never a lost report.
"""
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ..figures import new_figure, optional_figure, save_png
from . import fits
from .bank import BankFits
from .verdicts import OSI_MIN

__all__ = ['plot_filter_grid', 'plot_distributions', 'plot_nxny', 'plot_orientations', 'MAX_GRID_FILTERS',
           'plot_l0', 'plot_tuning', 'plot_coaxial', 'plot_association', 'plot_kernel_model']

PathLike = Union[str, Path]
MAX_GRID_FILTERS = 64
_GROUP_COLOURS = {'analysed': 'tab:blue', 'random_init': 'tab:orange', 'pixel_shuffle': 'tab:green', 'step0': 'tab:purple'}


def _fitted(record: Dict, shape) -> Optional[np.ndarray]:
    """The model drawn beside a filter: its class's fit, else the better of the two; None without fits."""
    x, y = fits.pixel_grid(shape)
    gabor, log = record['gabor'], record['log']
    use_gabor = gabor is not None and (record['class'] == 'gabor-like' or log is None or (
        record['class'] != 'centre-surround' and (gabor['error'] or math.inf) <= (log['error'] or math.inf)))
    if use_gabor:
        return fits.gabor_model([gabor[k] for k in ('amplitude', 'theta', 'frequency', 'sigma_x', 'sigma_y', 'x0', 'y0',
                                                     'phase', 'offset')], x, y)
    if log is not None:
        return fits.log_model([log[k] for k in ('amplitude', 'sigma', 'x0', 'y0', 'offset')], x, y)
    return None


def _show(ax, image: np.ndarray, limit: Optional[float] = None) -> None:
    if image.ndim == 3:
        ax.imshow(image, interpolation='nearest')
    else:
        lim = limit if limit is not None else (float(np.abs(image).max()) or 1.0)
        ax.imshow(image, cmap='RdBu_r', vmin=-lim, vmax=lim, interpolation='nearest')
    ax.set_xticks([])
    ax.set_yticks([])


@optional_figure
def plot_filter_grid(weight: np.ndarray, bank: BankFits, path: PathLike, title: str = '') -> Path:
    """Each filter (colour, its luminance part, the fit), with its class and errors; at most 64 filters."""
    lum = fits.luminance(weight).spatial
    n = min(len(bank.records), MAX_GRID_FILTERS)
    colour = weight.shape[1] == 3
    fitted = not {'gabor', 'log'} <= set(bank.refused)  # a 3x3 bank has no fit to draw
    panels = 1 + colour + fitted
    cols = 8 if n > 16 else 4
    rows = math.ceil(n / cols)
    fig = new_figure(figsize=(cols * panels * 0.75, rows * 1.05 + 0.6))
    grid = fig.add_gridspec(rows, cols * panels, wspace=0.05, hspace=0.55)
    for i in range(n):
        record = bank.records[i]
        r, c = divmod(i, cols)
        axes = [fig.add_subplot(grid[r, c * panels + j]) for j in range(panels)]
        if colour:
            rgb = np.moveaxis(weight[i], 0, -1)
            span = float(np.abs(rgb).max()) or 1.0
            _show(axes[0], np.clip(0.5 + rgb / (2 * span), 0, 1))
        limit = float(np.abs(lum[i]).max()) or 1.0
        _show(axes[int(colour)], lum[i], limit)
        model = _fitted(record, lum[i].shape) if fitted else None
        if fitted and model is not None:
            _show(axes[-1], model, limit)
        elif fitted:
            axes[-1].axis('off')
        if fitted:
            errors = '/'.join(f'{record[k]["error"]:.2f}' if record[k] and record[k]['error'] is not None else '-'
                              for k in ('gabor', 'log'))
            label = {'gabor-like': 'G', 'centre-surround': 'CS', 'unstructured': 'U', 'flat': 'F'}.get(record['class'], '')
        else:
            errors, label = ('-' if record['osi'] is None else f'{record["osi"]:.2f}'), 'OSI'
        axes[0].set_title(f'{record["index"]} {label} {errors}', fontsize=6, loc='left')
    what = (f'{"RGB, " if colour else ""}luminance, fit (title: index, class G/CS/U, e_Gabor/e_LoG)' if fitted
            else f'{"RGB, " if colour else ""}luminance (title: index, orientation index; too small to fit)')
    fig.suptitle('\n'.join(t for t in (title, f'filters: {what}') if t), fontsize=9)
    return save_png(fig, path)


def _groups(banks: Dict[str, BankFits]) -> List[str]:
    return [g for g in _GROUP_COLOURS if g in banks]


@optional_figure
def plot_distributions(banks: Dict[str, BankFits], path: PathLike, title: str = '') -> Path:
    """Box plots of e_Gabor, e_LoG, OSI and RSI for the analysed bank beside each (pooled) control."""
    panels = [('gabor', 'error', 'Gabor error e_G'), ('log', 'error', 'LoG error e_LoG'),
              ('osi', None, 'orientation index OSI'), ('rsi', None, 'radial symmetry RSI')]
    groups = _groups(banks)
    fig = new_figure(figsize=(3.0 * len(panels), 3.4))
    for j, (key, sub, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        data = [banks[g].values(key, sub) for g in groups]
        data = [d[np.isfinite(d)] for d in data]
        if not any(len(d) for d in data):
            ax.text(0.5, 0.5, 'not fitted\n(kernel too small)', ha='center', va='center', transform=ax.transAxes)
            ax.set_title(label, fontsize=9)
            ax.set_xticks([])
            continue
        positions = [i for i, d in enumerate(data) if len(d)]
        box = ax.boxplot([data[i] for i in positions], positions=positions, widths=0.6, patch_artist=True,
                         showfliers=False)
        for patch, i in zip(box['boxes'], positions):
            patch.set_facecolor(_GROUP_COLOURS[groups[i]])
            patch.set_alpha(0.35)
        rng = np.random.default_rng(0)
        for i in positions:
            ax.plot(i + rng.uniform(-0.2, 0.2, len(data[i])), data[i], '.', ms=2.5, color=_GROUP_COLOURS[groups[i]])
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([g.replace('_', '\n') for g in groups], fontsize=7)
        ax.set_title(label, fontsize=9)
        if sub == 'error':
            ax.axhline(fits.ERROR_MAX, color='grey', lw=0.8, ls='--')
        if key == 'osi':
            ax.axhline(OSI_MIN, color='grey', lw=0.8, ls='--')
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path)


@optional_figure
def plot_nxny(banks: Dict[str, BankFits], path: PathLike, title: str = '') -> Path:
    """Ringach's (nx, ny) = (sigma_x f, sigma_y f) of every Gabor fit; Gabor-like filters filled."""
    fig = new_figure(figsize=(4.6, 4.4))
    ax = fig.add_subplot()
    analysed = [r['gabor'] for r in banks['analysed'].records if r['gabor']]
    values = np.array([[f['nx'], f['ny']] for f in analysed], float).ravel()
    values = values[np.isfinite(values)]
    # the analysed bank sets the scale; control points beyond it are left out of view
    top = max(1.5, float(values.max()) if len(values) else 0.0)
    for g in reversed(_groups(banks)):
        bank = banks[g]
        for like, marker in ((True, 'o'), (False, 'x')):
            rows = [r for r in bank.records if r['gabor'] and (r['class'] == 'gabor-like') == like]
            if not rows:
                continue
            nx = np.array([r['gabor']['nx'] for r in rows], float)
            ny = np.array([r['gabor']['ny'] for r in rows], float)
            ax.scatter(nx, ny, s=14 if g == 'analysed' else 6, marker=marker, color=_GROUP_COLOURS[g],
                       alpha=0.9 if g == 'analysed' else 0.35,
                       label=f'{g} ({"Gabor-like" if like else "other"}, {len(rows)})')
    ax.set_xlim(0, top * 1.05)
    ax.set_ylim(0, top * 1.05)
    ax.plot([0, top], [0, top], color='grey', lw=0.6, ls=':')
    ax.set_xlabel('nx = sigma_x f (along the carrier)')
    ax.set_ylabel('ny = sigma_y f (along the edge)')
    ax.legend(fontsize=6, loc='upper right')
    ax.set_title('\n'.join(t for t in (title, 'Gabor envelope in carrier periods (controls beyond the axes not shown)')
                            if t), fontsize=9)
    return save_png(fig, path)


@optional_figure
def plot_orientations(bank: BankFits, path: PathLike, title: str = '') -> Path:
    """Histogram of the edge orientations (spectral index) of the analysed filters, in 15-degree bins;
    filters with OSI >= OSI_MIN filled, the rest outlined."""
    edges = np.degrees(bank.values('edge_theta'))
    osi = bank.values('osi')
    tuned = np.isfinite(osi) & (osi >= OSI_MIN)
    bins = np.arange(0, 181, 15)
    fig = new_figure(figsize=(5.0, 3.4))
    ax = fig.add_subplot()
    ax.hist(edges[np.isfinite(edges)], bins=bins, histtype='step', color='grey', label=f'all ({np.isfinite(edges).sum()})')
    ax.hist(edges[tuned], bins=bins, color='tab:blue', alpha=0.7, label=f'OSI >= {OSI_MIN} ({int(tuned.sum())})')
    ax.set_xticks(bins[::2])
    ax.set_xlabel('edge orientation (degrees, counter-clockwise from +x, y up)')
    ax.set_ylabel('filters')
    ax.legend(fontsize=7)
    ax.set_title('\n'.join(t for t in (title, 'Edge orientation of the analysed filters') if t), fontsize=9)
    return save_png(fig, path)


# --- the V1 analysis -----------------------------------------------------------------------------

_KERNEL_COLOURS = {'trained': 'tab:blue', 'step0': 'tab:purple', 'filter_correlation': 'tab:green'}


def _text(value: Optional[float], spec: str = '.2f') -> str:
    return '-' if value is None else format(value, spec)


@optional_figure
def plot_l0(l0: Dict[str, Any], path: PathLike, title: str = '') -> Path:
    """Each pre-filter (trained, step 0) beside its LoG fit and its radial profile with the fit's."""
    rows = [name for name in ('trained', 'step0') if name in l0]
    fig = new_figure(figsize=(8.4, 2.6 * len(rows) + 0.4))
    for r, name in enumerate(rows):
        f = np.asarray(l0[name]['filter'], float)
        fit = l0[name]['log']
        x, y = fits.pixel_grid(f.shape)
        model = fits.log_model([fit[k] for k in ('amplitude', 'sigma', 'x0', 'y0', 'offset')], x, y)
        limit = float(np.abs(f).max()) or 1.0
        for c, (image, label) in enumerate(((f, f'{name} l0'), (model, f'LoG fit, e = {fit["error"]:.2f}'))):
            ax = fig.add_subplot(len(rows), 3, 3 * r + c + 1)
            _show(ax, image, limit)
            ax.set_title(label + (f', RSI {l0[name]["rsi"]:.2f}' if c == 0 and l0[name]['rsi'] is not None else ''),
                         fontsize=8)
        ax = fig.add_subplot(len(rows), 3, 3 * r + 3)
        radius = np.hypot(x - fit['x0'], y - fit['y0'])
        ax.plot(radius.ravel(), f.ravel(), '.', ms=3, color=_KERNEL_COLOURS[name], label='filter pixels')
        grid = np.linspace(0, radius.max(), 100)
        u = grid ** 2 / (2 * fit['sigma'] ** 2)
        ax.plot(grid, fit['amplitude'] * (1 - u) * np.exp(-u) + fit['offset'], color='black', lw=1, label='LoG fit')
        ax.set_xlabel('distance from the fit centre (px)', fontsize=7)
        ax.legend(fontsize=6)
    fig.suptitle('\n'.join(t for t in (title, 'pre-filter l0 and its Laplacian-of-Gaussian fit') if t), fontsize=9)
    return save_png(fig, path)


@optional_figure
def plot_tuning(selectivity: Dict[str, Dict[str, Any]], path: PathLike, title: str = '') -> Path:
    """Mean excitatory connection strength against the orientation difference, per kernel, each curve divided
    by its mean so that kernels of different scales compare."""
    fig = new_figure(figsize=(5.2, 3.6))
    ax = fig.add_subplot()
    for name, sel in selectivity.items():
        ex = sel['excitatory']
        edges = np.asarray(ex['bin_edges_deg'])
        centres = (edges[:-1] + edges[1:]) / 2
        curve = np.array([np.nan if v is None else v for v in ex['tuning']], float)
        scale = np.nanmean(curve) or 1.0
        p, si = _text(ex['p'], '.3g'), _text(ex['selectivity_index'])
        ax.plot(centres, curve / scale, 'o-', color=_KERNEL_COLOURS.get(name, 'grey'),
                label=f'{name}: rho {_text(ex["spearman_rho"])}, SI {si}, p {p}')
    ax.axhline(1.0, color='grey', lw=0.6, ls=':')
    ax.set_xlabel('orientation difference of the joined filters (degrees)')
    ax.set_ylabel('excitatory strength / its mean')
    ax.legend(fontsize=6)
    ax.set_title('\n'.join(t for t in (title, 'lateral connections against orientation difference') if t), fontsize=9)
    return save_png(fig, path)


@optional_figure
def plot_coaxial(co_axial: Dict[str, Dict[str, Any]], path: PathLike, title: str = '') -> Path:
    """The mean iso-oriented connection map in the source filter's frame (its edge along +x), per kernel,
    with the principal axis of its positive part."""
    names = [n for n, v in co_axial.items() if v.get('mean_map') is not None]
    fig = new_figure(figsize=(2.8 * max(1, len(names)), 3.1))
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, max(1, len(names)), i + 1)
        field = np.asarray(co_axial[name]['mean_map'], float)
        _show(ax, field)
        c = (field.shape[0] - 1) / 2
        axis = co_axial[name]['axis_deg']
        if axis is not None:
            a = math.radians(axis)
            ax.plot([c - c * math.cos(a), c + c * math.cos(a)], [c + c * math.sin(a), c - c * math.sin(a)], 'k--', lw=0.8)
        ax.plot([c - 0.4, c + 0.4], [c, c], color='black', lw=2)  # the source's edge orientation
        ax.set_title(f'{name}\naxis {axis if axis is None else round(axis, 1)} deg, {co_axial[name]["pairs"]} pairs',
                     fontsize=7)
    fig.suptitle('\n'.join(t for t in (title, 'iso-oriented connections in the source frame (edge along +x)') if t),
                 fontsize=9)
    return save_png(fig, path)


def _segments(ax, x: np.ndarray, y: np.ndarray, angle: np.ndarray, length: np.ndarray, colour: str) -> None:
    from matplotlib.collections import LineCollection

    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    ax.add_collection(LineCollection(np.stack([np.stack([x - dx, y - dy], -1), np.stack([x + dx, y + dy], -1)], 1),
                                     colors=colour, linewidths=1.4))


@optional_figure
def plot_association(field: Any, k: int, path: PathLike, title: str = '') -> Path:
    """The pooled association field (an :class:`timm_u1.early.connectivity.AssociationField`: at each grid
    cell of the source's frame, the strength-weighted mean orientation of the strongest connections,
    segment length by mean strength) beside the co-circularity prediction 2 atan2(y, x)."""
    from .connectivity import cocircular_orientation

    c = (k - 1) // 2
    col, row = np.rint(field.x).astype(int), np.rint(field.y).astype(int)
    inside = (np.abs(col) <= c) & (np.abs(row) <= c) & (field.strength > 0)
    z = np.zeros((k, k), complex)
    total = np.zeros((k, k))
    np.add.at(z, (row[inside] + c, col[inside] + c), field.strength[inside] * np.exp(2j * field.angle[inside]))
    np.add.at(total, (row[inside] + c, col[inside] + c), field.strength[inside])
    ys, xs = np.mgrid[-c:c + 1, -c:c + 1].astype(float)
    seen = total > 0
    seen[c, c] = False
    fig = new_figure(figsize=(7.2, 3.8))
    for i, (name, angle, length) in enumerate((
            ('learned kernel', np.angle(z) / 2, 0.9 * total / (total[seen].max() if seen.any() else 1.0)),
            ('co-circularity model', cocircular_orientation(xs, ys), np.full((k, k), 0.7)))):
        ax = fig.add_subplot(1, 2, i + 1)
        _segments(ax, xs[seen], ys[seen], angle[seen], length[seen], 'tab:blue' if i == 0 else 'black')
        ax.plot([-0.45, 0.45], [0, 0], color='tab:red', lw=3)  # the reference filter, edge along +x
        ax.set_xlim(-c - 1, c + 1)
        ax.set_ylim(-c - 1, c + 1)
        ax.set_aspect('equal')
        ax.set_title(name, fontsize=8)
    fig.suptitle('\n'.join(t for t in (title, 'association field in the source frame (red: source edge)') if t),
                 fontsize=9)
    return save_png(fig, path)


@optional_figure
def plot_kernel_model(binned: np.ndarray, model: np.ndarray, label: str, path: PathLike, title: str = '') -> Path:
    """The learned kernel binned by orientation difference in the source frame (top) above the
    direction-process kernel (bottom), one column per orientation-difference bin; centre cell masked."""
    bins, k = binned.shape[0], binned.shape[-1]
    fig = new_figure(figsize=(1.3 * bins, 3.2))
    for row, (data, name) in enumerate(((binned, 'learned'), (model, label))):
        data = np.array(data, float)
        data[:, k // 2, k // 2] = np.nan
        limit = float(np.nanmax(np.abs(data))) or 1.0
        for b in range(bins):
            ax = fig.add_subplot(2, bins, row * bins + b + 1)
            _show(ax, np.nan_to_num(data[b]), limit)
            if row == 0:
                ax.set_title(f'{180 * b / bins:.1f} deg', fontsize=6)
            if b == 0:
                ax.set_ylabel(name, fontsize=6)
    fig.suptitle('\n'.join(t for t in (title, 'kernel by orientation difference, source frame') if t), fontsize=9)
    return save_png(fig, path)
