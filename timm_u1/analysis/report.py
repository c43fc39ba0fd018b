"""What an analysis returns and writes: :class:`AnalysisReport`, and its files ``report.json``, the PNG plots and
``report.md`` (settings, figures, verdicts, the model beside its controls, per-class statistics)."""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from ..files import write_json, write_text
from .circular import RAYLEIGH_QUESTION
from .controls_report import controls_markdown
from .formatting import format_value

__all__ = ['AnalysisReport', 'write_report', 'render_markdown', 'controls_markdown']


@dataclass
class AnalysisReport:
    """What :func:`timm_u1.analysis.analyze` returns: the run's settings, the figures and the files written."""
    meta: Dict[str, Any]
    figures: Dict[str, Any]
    statistics: Any = field(repr=False)  # the SombreroStatistics the figures come from
    paths: Dict[str, Path] = field(default_factory=dict)
    controls: Dict[str, Any] = field(default_factory=dict)  # timm_u1.analysis.controls.run_controls' section
    verdicts: Dict[str, Any] = field(default_factory=dict)  # per claim, from timm_u1.analysis.claims.verdicts

    def to_dict(self) -> Dict[str, Any]:
        out = {'meta': self.meta, 'figures': self.figures}
        if self.controls:
            out.update(controls=self.controls, verdicts=self.verdicts)
        return out


def write_report(report: AnalysisReport, out: Union[str, os.PathLike], plots: bool = True) -> Dict[str, Path]:
    """Write ``report.json``, the PNG plots and ``report.md`` into ``out``; returns the paths."""
    out = Path(out)
    paths: Dict[str, Path] = {'report.json': out / 'report.json'}
    write_json(paths['report.json'], report.to_dict())  # the results first: a figure never costs them
    if plots:
        from .plots import plot_controls, plot_report

        title = f"{report.meta['model']} / {report.meta['layer']} / {report.meta['data']}"
        paths.update(plot_report(report.figures, out, title))
        if report.controls:
            paths['controls'] = plot_controls(report.controls, report.verdicts, out / 'controls.png', title)
    paths = {name: path for name, path in paths.items() if path is not None}  # None: a figure not drawn
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

_SETTINGS = ('model', 'weights', 'architecture', 'layer', 'input_size', 'map_shape', 'data', 'split', 'images',
             'classes', 'permutations', 'seed', 'timm_u1_version')


def render_markdown(report: AnalysisReport, files: Dict[str, str]) -> str:
    """``report.md``: settings, a table of the figures, the plots and the per-class statistics."""
    m, f = report.meta, report.figures
    lines = [f"# U(1) analysis: {m['model']} on {m['data']}", '', '| setting | value |', '|---|---|']
    lines += [f'| {key} | {format_value(m.get(key))} |' for key in _SETTINGS]
    lines += ['', '## Figures', '', '| figure | value |', '|---|---|']
    lines += [f'| {k} | {format_value(v)} |' for k, v in _figure_rows(f)]
    if f['skipped']:
        lines += ['', '## Skipped', '']
        lines += [f'- **{k}**: {v}' for k, v in f['skipped'].items()]
    if m.get('unreadable'):
        lines += ['', f"## Unreadable images ({len(m['unreadable'])}, left out)", '']
        lines += [f'- {message}' for message in m['unreadable']]
    if report.controls:
        lines += [''] + controls_markdown(report.controls, report.verdicts)
    plots = [k for k in _PLOT_CAPTIONS if k in files]
    if plots:
        lines += ['', '## Plots', '']
        lines += [f'![{_PLOT_CAPTIONS[k]}]({files[k]})' for k in plots]
    lines += _per_class_lines(f)
    lines += ['', 'Angles in degrees; R is the mean resultant length (0 = uniform, 1 = one direction). '
              'Definitions: docs/math.md and docs/analysis.md.', '', RAYLEIGH_QUESTION, '']
    return '\n'.join(lines)


def _figure_rows(f: Dict[str, Any]) -> List[Tuple[str, Any]]:
    """(label, value) rows of the figures table."""
    e = f['energy']
    rows: List[Tuple[str, Any]] = [('mean energy', e['mean'])]
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
                     f"{format_value(a['mean_direction_deg'])}, {format_value(a['resultant_length'])}, "
                     f"{format_value(a['rayleigh_log10_p'])}"))
    for name, test in f.get('permutation_test', {}).items():
        rows.append((f'permutation test of class means, {name}: T (null mean), p',
                     f"{format_value(test['statistic'])} ({format_value(test.get('null_mean'))}), "
                     f"{format_value(test['p_value'])}"))
    return rows


def _per_class_lines(f: Dict[str, Any]) -> List[str]:
    """The per-class table of the hue theta and the centroid angle phi."""
    hue_classes = f.get('hue', {}).get('classes')
    phi_classes = f.get('centroid_angle', {}).get('classes')
    if not (hue_classes or phi_classes):
        return []
    lines = ['', '## Per class', '',
             '| class | images | hue mean (deg) | hue R | hue Rayleigh log10 p | φ mean (deg) | φ R | φ Rayleigh log10 p |',
             '|---|---|---|---|---|---|---|---|']
    for i in range(len(hue_classes or phi_classes)):
        hc = hue_classes[i] if hue_classes else {}
        pc = phi_classes[i] if phi_classes else {}
        values = [hc.get('mean_direction_deg'), hc.get('resultant_length'), hc.get('rayleigh_log10_p'),
                  pc.get('mean_direction_deg'), pc.get('resultant_length'), pc.get('rayleigh_log10_p')]
        lines.append(f"| {hc.get('class', pc.get('class'))} | {hc.get('images', pc.get('images'))} | "
                     + ' | '.join(format_value(v) for v in values) + ' |')
    return lines
