""" The analysis figures of ``report.json``: energy map, sombrero, radial profile, hue density, polar
histograms, and the trained model beside its controls.

Each function takes plain data (a result dict, a metrics log), so plots can be redrawn from the
saved files, and writes one PNG atomically. Figures are built with ``matplotlib.figure.Figure`` (no pyplot), so
plotting never changes the backend of a notebook or opens a window. Needs matplotlib
(``pip install "timm_u1[plot]"``).
"""
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import numpy as np

from ..figures import new_figure as _figure, optional_figure, save_png as _save

__all__ = [
    'plot_energy_map', 'plot_sombrero', 'plot_radial_profile', 'plot_hue_density', 'plot_polar_histograms',
    'plot_report', 'plot_controls',
    'MAX_POLAR_PANELS',
]

PathLike = Union[str, Path]

# polar panels per figure: beyond this the classes are too small to read
MAX_POLAR_PANELS = 24


@optional_figure
def plot_energy_map(result: Dict[str, Any], path: PathLike, title: str = '') -> Path:
    """Heat map of the mean energy E(x, y), with the grid centre (+) and the energy centroid (x)."""
    energy = np.asarray(result['energy']['mean_map'])
    h, w = energy.shape
    fig = _figure(figsize=(4.8, 4.2))
    ax = fig.add_subplot()
    im = ax.imshow(energy, cmap='magma', origin='upper')
    fig.colorbar(im, ax=ax, label='mean energy  ||I(x, y)||²')
    cx0, cy0 = (w - 1) / 2, (h - 1) / 2
    ax.plot(cx0, cy0, '+', color='cyan', markersize=14, mew=2, label='grid centre')
    centroid = result['energy'].get('centroid_of_mean_map')
    if centroid and centroid['x'] is not None:
        ax.plot(cx0 + centroid['x'], cy0 + centroid['y'], 'x', color='lime', markersize=10, mew=2,
                label='energy centroid')
    ax.legend(loc='lower right', fontsize=7, framealpha=0.7)
    ax.set_xlabel('x')
    ax.set_ylabel('y')
    conc = result['energy'].get('centre_concentration')
    sub = f'centre concentration {conc:.2f}' if conc is not None else ''
    ax.set_title('\n'.join(t for t in (title, f'Mean energy map ({h}x{w})', sub) if t), fontsize=9)
    return _save(fig, path)


@optional_figure
def plot_sombrero(result: Dict[str, Any], path: PathLike, title: str = '') -> Path:
    """The mean energy map as a 3-D surface: the "sombrero" potential of the paper."""
    energy = np.asarray(result['energy']['mean_map'])
    h, w = energy.shape
    xs = np.arange(w) - (w - 1) / 2
    ys = np.arange(h) - (h - 1) / 2
    gx, gy = np.meshgrid(xs, ys)
    fig = _figure(figsize=(5.6, 4.4))
    ax = fig.add_subplot(projection='3d')
    ax.plot_surface(gx, gy, energy, cmap='magma', linewidth=0.3, edgecolor='k', antialiased=True)
    ax.set_xlabel('x - x0')
    ax.set_ylabel('y - y0')
    ax.set_zlabel('mean energy')
    ax.invert_yaxis()  # rows grow downwards, as in the heat map
    ax.set_title('\n'.join(t for t in (title, 'Energy surface') if t), fontsize=9)
    return _save(fig, path)


@optional_figure
def plot_radial_profile(result: Dict[str, Any], path: PathLike, title: str = '') -> Path:
    """Mean energy per ring against the ring's mean distance from the grid centre."""
    prof = result['energy']['radial_profile']
    fig = _figure(figsize=(4.8, 3.4))
    ax = fig.add_subplot()
    ax.plot(prof['radius'], prof['mean_energy'], 'o-', color='tab:red')
    ax.axhline(result['energy']['mean'], color='grey', ls='--', lw=1, label='mean over the map')
    radius = result['energy'].get('centre_radius')
    if radius is not None:
        ax.axvline(radius, color='tab:blue', ls=':', lw=1, label='R/2 (centre region)')
    ax.set_xlabel('distance from the grid centre (cells)')
    ax.set_ylabel('mean energy')
    ax.legend(fontsize=7)
    ax.set_title('\n'.join(t for t in (title, 'Radial energy profile') if t), fontsize=9)
    return _save(fig, path)


@optional_figure
def plot_hue_density(result: Dict[str, Any], path: PathLike, title: str = '') -> Path:
    """Log density of the hue-plane coordinates (a, b) of every location: the sombrero's brim is a ring."""
    dens = result['hue']['density']
    counts = np.asarray(dens['counts'])
    e = dens['extent']
    fig = _figure(figsize=(4.8, 4.2))
    ax = fig.add_subplot()
    im = ax.imshow(np.log10(1 + counts), extent=(-e, e, -e, e), origin='lower', cmap='viridis')
    fig.colorbar(im, ax=ax, label='log10(1 + locations)')
    ax.axhline(0, color='w', lw=0.5)
    ax.axvline(0, color='w', lw=0.5)
    overall = result['hue']['all']
    r = overall['resultant_length']
    sub = f'hue R = {r:.2f} (energy-weighted)' if r is not None else ''
    if dens['outside_share']:
        sub += f", {100 * dens['outside_share']:.2g}% outside"
    ax.set_xlabel('a')
    ax.set_ylabel('b')
    ax.set_title('\n'.join(t for t in (title, 'Hue-plane density', sub) if t), fontsize=9)
    return _save(fig, path)


@optional_figure
def plot_polar_histograms(
        groups: Sequence[Dict[str, Any]],
        path: PathLike,
        title: str = '',
        quantity: str = 'angle',
) -> Path:
    """One polar histogram per group (class, and 'all'), with the mean direction scaled by R.

    Each group dict has 'class', 'histogram' (equal sectors from -180 degrees), 'mean_direction_deg'
    and 'resultant_length'. At most ``MAX_POLAR_PANELS`` groups are drawn (the first ones).
    """
    shown = list(groups)[:MAX_POLAR_PANELS]
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = _figure(figsize=(2.4 * cols, 2.6 * rows + 0.5))
    for i, g in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1, projection='polar')
        hist = np.asarray(g['histogram'], dtype=float)
        bins = len(hist)
        width = 2 * np.pi / bins
        starts = -np.pi + width * np.arange(bins)
        peak = hist.max() if hist.size and hist.max() > 0 else 1.0
        ax.bar(starts, hist / peak, width=width, align='edge', color='tab:blue', alpha=0.7, edgecolor='k', lw=0.3)
        r, mu = g.get('resultant_length'), g.get('mean_direction_deg')
        if r is not None and mu is not None:
            ax.annotate('', xy=(math.radians(mu), r), xytext=(0, 0),
                        arrowprops=dict(arrowstyle='->', color='tab:red', lw=1.6))
        ax.set_ylim(0, 1)
        ax.set_yticklabels([])
        ax.set_xticks(np.radians([0, 90, 180, 270]))
        ax.tick_params(labelsize=6)
        ax.set_theta_direction(-1 if quantity == 'phi' else 1)  # phi: y grows downwards, as in the image
        label = f"{g['class']}  n={g['images']}"
        if r is not None:
            label += f'\nR={r:.2f}'
        ax.set_title(label, fontsize=7)
    more = f' (first {len(shown)} of {len(groups)})' if len(groups) > len(shown) else ''
    fig.suptitle(f'{title}{more}', fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_report(result: Dict[str, Any], out_dir: PathLike, title: str = '') -> Dict[str, Path]:
    """Every plot the result supports, as ``{name: path}``; figures the result skipped or that failed are left out."""
    out_dir = Path(out_dir)
    paths: Dict[str, Path] = {'energy_map': plot_energy_map(result, out_dir / 'energy_map.png', title)}
    if 'radial_profile' in result['energy']:
        paths['sombrero'] = plot_sombrero(result, out_dir / 'sombrero.png', title)
        paths['radial_profile'] = plot_radial_profile(result, out_dir / 'radial_profile.png', title)
    if 'hue' in result:
        paths['hue_density'] = plot_hue_density(result, out_dir / 'hue_density.png', title)
        paths['hue_polar'] = plot_polar_histograms(
            _groups(result['hue']), out_dir / 'hue_polar.png',
            f'{title}: activation hue θ per class (energy-weighted; arrow = mean direction x R)', 'theta')
    if 'centroid_angle' in result:
        paths['centroid_polar'] = plot_polar_histograms(
            _groups(result['centroid_angle']), out_dir / 'centroid_polar.png',
            f'{title}: energy-centroid angle φ per class (arrow = mean direction x R)', 'phi')
    return {name: path for name, path in paths.items() if path is not None}  # None: not drawn (warned)


def _groups(section: Dict[str, Any]) -> List[Dict[str, Any]]:
    return list(section.get('classes', [])) + [section['all']]


@optional_figure
def plot_controls(controls: Dict[str, Any], claims: Dict[str, Any], path: PathLike, title: str = '') -> Path:
    """The trained model beside its controls (``report.json``'s ``controls``), one panel per figure.

    Panels: centre concentration (the input also at its other energy exponents); decoding accuracy from theta and
    from phi (model, input, every random network, chance); the logits' alignment with the class angle (model,
    every random network, the random class orders); the hue's standardised T under random channel orders with the
    natural order marked. Each panel's title carries the claim's verdict.
    """
    src = controls['sources']
    null = src['model'].get('theta', {}).get('channel_orders', {})
    theta_null, null_name = (null.get('standardised'), 'standardised T') if null.get('standardised') else (
        null.get('statistic'), 'T')
    panels = [('sombrero', 'centre concentration', ('centre_concentration',))]
    if 'theta' in src['model']:
        panels.append(('hue_class', 'decoding accuracy from θ', ('theta', 'accuracy')))
    if 'phi' in src['model']:
        panels.append(('centroid_angle_class', 'decoding accuracy from φ', ('phi', 'accuracy')))
    if 'logits' in src['model']:
        panels.append(('logit_hue_class', "logits' hue: alignment A", ('logits', 'alignment')))
    count = len(panels) + (1 if theta_null else 0)
    fig = _figure(figsize=(3.4 * count, 3.4))
    for i, (claim, label, keys) in enumerate(panels):
        ax = fig.add_subplot(1, count, i + 1)
        _source_panel(ax, controls, keys)
        verdict = (claims.get(claim) or {}).get('verdict') or 'not evaluated'
        ax.set_title(f'{label}\n{verdict}', fontsize=8)
    if theta_null:
        ax = fig.add_subplot(1, count, count)
        ax.hist(theta_null['values'], bins=20, color='tab:grey', alpha=0.8, label='random channel orders')
        ax.axvline(theta_null['natural'], color='tab:red', lw=2, label='natural order')
        ax.set_xlabel(f'hue class statistic, {null_name}', fontsize=8)
        ax.legend(fontsize=6)
        ax.set_title(f"channel-order null of θ\nnatural order at percentile {100 * theta_null['percentile']:.0f}",
                     fontsize=8)
    # above the panel titles (two lines each); bbox_inches='tight' keeps it in the PNG
    fig.suptitle(f"{title}\n{controls['images']} images, controls '{controls['level']['name']}'", fontsize=9, y=1.08)
    return _save(fig, path)


def _get(d: Any, keys: Sequence[str]) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _source_panel(ax, controls: Dict[str, Any], keys: Sequence[str]) -> None:
    """Bars of the trained model and the input, a dot per random network, and the figure's reference line."""
    src = controls['sources']
    logits = keys[0] == 'logits'
    vals = [_get(src['model'], keys), None if logits else _get(src['input'], keys)]
    ax.bar([0, 1], [v if v is not None else np.nan for v in vals], color=['tab:red', 'tab:grey'], width=0.6)
    rv = [v for v in (_get(r, keys) for r in src['random_init']) if v is not None]
    ax.plot(np.full(len(rv), 2.0) + np.linspace(-0.15, 0.15, max(len(rv), 1))[:len(rv)], rv, 'o',
            color='tab:blue', label='random init (each seed)')
    names = ['trained', 'input', 'random']
    if keys[0] == 'centre_concentration':
        ax.axhline(1.0, color='k', lw=0.8, ls=':', label='uniform (1)')
        tests = controls['concentration_model_vs_input'].get('input_exponents') or {}
        other = [(k, t['input']) for k, t in tests.items() if k != '1' and t.get('images')]
        ax.plot([1.0] * len(other), [v for _, v in other], 'x', color='k', label='input, energy^' + '/'.join(
            k for k, _ in other))
    elif logits:
        orders = _get(src['model'], ('logits', 'class_orders', 'alignment', 'values')) or []
        ax.plot(np.full(len(orders), 1.0) + np.linspace(-0.2, 0.2, max(len(orders), 1))[:len(orders)], orders, '.',
                color='tab:grey', ms=3, label='random class orders')
        names[1] = 'class orders'
    else:
        chance = _get(src['model'], (keys[0], 'chance'))
        if chance is not None:
            ax.axhline(chance, color='k', lw=0.8, ls=':', label='chance')
    ax.set_xticks([0, 1, 2])
    ax.set_xticklabels(names, fontsize=8)
    ax.legend(fontsize=6, loc='lower right')
