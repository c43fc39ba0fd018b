""" The V1 analysis' files: report.json, report.md and the PNGs; and :func:`read_v1_report`, which checks
every field a reader of report.json relies on.

report.md puts each verdict beside the numbers it rests on and the decision rule; the first-layer
filter analysis has its own report in ``filters/`` (linked).
"""
from pathlib import Path
from typing import Any, Dict, List

from ..analysis.controls import format_value
from ..files import read_json, write_json, write_text
from .v1verdicts import V1_CLAIMS, V1_DECISION_RULE

__all__ = ['write_v1_report', 'read_v1_report', 'render_v1_markdown', 'REPORT_FORMAT', 'CLAIM_ORDER']

REPORT_FORMAT = 'timm_u1.early.v1/1'
CLAIM_ORDER = ('l0', 'gabor', 'orientation', 'lateral_orientation', 'association')
VERDICTS = ('supported', 'not distinguishable from controls', 'contradicted', None)
_PLOTS = {
    'l0': ('l0.png', 'Pre-filter l0 beside its LoG fit (trained and step 0)'),
    'tuning': ('tuning.png', 'Lateral connection strength against orientation difference'),
    'co_axial': ('co_axial.png', 'Iso-oriented connections in the source frame'),
    'association': ('association.png', 'Association field of the learned kernel beside the co-circularity model'),
    'kernel_model': ('kernel_model.png', 'Learned kernel beside the direction-process kernel'),
}


def _plots(report, out: Path) -> Dict[str, Path]:
    from . import plots
    from .connectivity import association_field

    title = report.meta['subject']
    paths = {'l0': plots.plot_l0(report.l0, out / _PLOTS['l0'][0], title) if report.l0 else None}
    kernels = {n: v for n, v in report.kernels.items() if n != 'meta'}
    if kernels:
        paths['tuning'] = plots.plot_tuning({n: v['selectivity'] for n, v in kernels.items()},
                                            out / _PLOTS['tuning'][0], title)
        paths['co_axial'] = plots.plot_coaxial({n: v['co_axiality'] for n, v in kernels.items()},
                                               out / _PLOTS['co_axial'][0], title)
        arrays = report.arrays
        maps, theta = arrays['maps']['trained'], arrays['theta']
        paths['association'] = plots.plot_association(association_field(maps, theta), maps.shape[-1],
                                                      out / _PLOTS['association'][0], title)
        from .connectivity import binned_kernel

        corr = kernels['trained']['association']['correlation']
        label = f'direction process (sigma {corr["sigma"]}, lambda {corr["lambda"]})'
        paths['kernel_model'] = plots.plot_kernel_model(
            binned_kernel(maps, theta), arrays['models'][(corr['sigma'], corr['lambda'])], label,
            out / _PLOTS['kernel_model'][0], title)
    return {k: v for k, v in paths.items() if v is not None}


def write_v1_report(report, out: Path, plots: bool = True) -> Dict[str, Path]:
    """report.json (every number), the PNGs, then report.md, in ``out``."""
    out = Path(out)
    paths: Dict[str, Path] = {'report.json': out / 'report.json'}
    write_json(paths['report.json'], {'format': REPORT_FORMAT, **report.to_dict()})
    if plots:
        paths.update(_plots(report, out))
    paths['report.md'] = out / 'report.md'
    write_text(paths['report.md'], render_v1_markdown(report.to_dict(), {k: p.name for k, p in paths.items()
                                                                         if k in _PLOTS}))
    return paths


def _claim_name(key: str, verdict: Dict[str, Any]) -> str:
    return V1_CLAIMS.get(key) or verdict.get('claim') or key


def _kernel_rows(kernels: Dict[str, Any]) -> List[str]:
    lines = ['| kernel | rho (excit.) | SI | permutation p | co-axial axis (deg) | E_theta (deg) | shuffled E_theta '
             '| p | r with direction process | 95 % CI | shuffled r | p |', '|' + '---|' * 12]
    for name, k in kernels.items():
        if name == 'meta':
            continue
        ex, co = k['selectivity']['excitatory'], k['co_axiality']
        err, corr = k['association']['error'], k['association']['correlation']
        ci = corr['ci95']
        lines.append('| ' + ' | '.join([name] + [format_value(v) for v in (
            ex['spearman_rho'], ex['selectivity_index'], ex['p'], co['axis_deg'], err['error_deg'],
            err['shuffled_mean_deg'], err['p'], corr['r'])] + [
            '-' if not ci else f'[{ci[0]:.2f}, {ci[1]:.2f}]', format_value(corr['shuffled_mean_r']),
            format_value(corr['p'])]) + ' |')
    return lines


def render_v1_markdown(data: Dict[str, Any], plots: Dict[str, str]) -> str:
    """report.md from the contents of report.json (and the names of the PNGs drawn)."""
    meta = data['meta']
    lines = [f'# V1 analysis: {meta["subject"]}', '',
             f'Parts: {meta["parts"]}; first-layer filters {meta["filters"]}; lateral {meta["lateral"]}; step 0: '
             f'{meta["step0"] or "not given"}.', '', '## Verdicts', '', '| claim | verdict | reason |', '|---|---|---|']
    for key in CLAIM_ORDER:
        v = data['verdicts'][key]
        lines.append(f'| {_claim_name(key, v)} | {v["verdict"] or "not evaluated"} | {v["reason"]} |')
    lines += ['', f'Decision rule: {data["decision_rule"]}', '',
              'The first-layer filter claims follow the filter analysis\' own rule: [filters/report.md]'
              '(filters/report.md).', '']
    if data['l0']:
        lines += ['## Pre-filter l0', '', '| filter | e_LoG | sigma | RSI | rot90 corr | RSI of shuffled pixels | p |',
                  '|---|---|---|---|---|---|---|']
        for name, l0 in data['l0'].items():
            lines.append('| ' + ' | '.join([name] + [format_value(v) for v in (
                l0['log']['error'], l0['log']['sigma'], l0['rsi'], l0['rot90'], l0['rsi_shuffle_mean'],
                l0['rsi_shuffle_p'])]) + ' |')
        lines.append('')
    kernels = data['kernels']
    if len(kernels) > 1:
        meta_k = kernels['meta']
        lines += ['## Lateral kernel', '', f'{len(meta_k["oriented_filters"])} oriented filters, orientations from the '
                  f'{meta_k["orientation_source"]}. Every kernel is read with the trained filters\' orientations.', '']
        lines += _kernel_rows(kernels) + ['']
    for key, (name, caption) in _PLOTS.items():
        if key in plots:
            lines += [f'![{caption}]({plots[key]})', '']
    return '\n'.join(lines)


def read_v1_report(path: Path) -> Dict[str, Any]:
    """A report.json of :func:`write_v1_report`, with every field a summary reads checked; a bad one raises
    ValueError naming the field."""
    path = Path(path)
    data = read_json(path)

    def bad(field: str, why: str) -> ValueError:
        return ValueError(f'{path}: {field} {why}; run the analysis again (delete the file).')

    if not isinstance(data, dict) or data.get('format') != REPORT_FORMAT:
        raise bad('format', f'is not {REPORT_FORMAT!r}')
    for key, kind in (('meta', dict), ('verdicts', dict), ('l0', dict), ('kernels', dict), ('decision_rule', str)):
        if not isinstance(data.get(key), kind):
            raise bad(key, f'is missing or not a {kind.__name__}')
    for key in CLAIM_ORDER:
        v = data['verdicts'].get(key)
        if not isinstance(v, dict):
            raise bad(f'verdicts.{key}', 'is missing')
        if v.get('verdict') not in VERDICTS:
            raise bad(f'verdicts.{key}.verdict', f'must be one of {list(VERDICTS)}, got {v.get("verdict")!r}')
        if not isinstance(v.get('reason'), str) or not isinstance(v.get('numbers'), dict):
            raise bad(f'verdicts.{key}', 'needs a reason (text) and numbers (a mapping)')
    for name, l0 in data['l0'].items():
        if not isinstance(l0, dict) or not isinstance(l0.get('log'), dict) or not _num_or_none(l0.get('rsi')):
            raise bad(f'l0.{name}', 'needs a LoG fit (mapping) and an RSI (number or null)')
    if not isinstance(data['meta'].get('subject'), str):
        raise bad('meta.subject', 'must be text')
    return data


def _num_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
