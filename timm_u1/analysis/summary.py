"""The tables docs/analysis.md embeds, made from what the analyses write (``report.json``, or the JSON of
scripts/follows_input.py), so that a check can regenerate each one and compare (scripts/check_docs_analysis.py)."""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .claims import source_values, spread
from .formatting import format_value

__all__ = ['TABLES', 'summary_table']

Reports = Sequence[Tuple[str, Dict[str, Any]]]  # (name, report.json), in the order the page lists them


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        d = d[k] if isinstance(d, list) and isinstance(k, int) and k < len(d) else (
            d.get(k) if isinstance(d, dict) else None)
    return d


def _spread_text(values: List[float]) -> str:
    s = spread(values)
    return '' if s['min'] is None else ' / '.join(format_value(s[k]) for k in ('min', 'median', 'max'))


def _source_row(label: str, src: Dict[str, Any], *keys: str) -> str:
    return (f"| {label} | {format_value(_get(src['model'], *keys))} | {format_value(_get(src['input'], *keys))} | "
            f"{_spread_text(source_values(src['random_init'], *keys))} |")


def _order_text(null: Optional[Dict[str, Any]]) -> str:
    if not null:
        return '-'
    return (f"percentile {100 * null['percentile']:.0f} (median order {format_value(null['median'])}, "
            f"p = {format_value(null['p_value'])})")


def figures_table(reports: Reports) -> str:
    """The trained model beside the input and the random networks, dataset by dataset."""
    lines = ['| figure (controls\' images) | trained | input | random init (min / median / max) |', '|---|---|---|---|']
    for name, report in reports:
        c = report['controls']
        src, pair = c['sources'], c['concentration_model_vs_input']
        lines.append(f"| **{name}** ({c['images']} images, {len(src['random_init'])} random networks): centre "
                     f"concentration (mean map) | {format_value(src['model'].get('centre_concentration'))} | "
                     f"{format_value(src['input'].get('centre_concentration'))} | "
                     f"{_spread_text(source_values(src['random_init'], 'centre_concentration'))} |")
        mm = pair.get('mean_map') or {}
        if mm.get('images'):
            lines.append(f"| {name}: mean-map difference model - input [95 % image-bootstrap interval] | "
                         f"{format_value(mm['difference'])} [{format_value(mm['ci'][0])}, {format_value(mm['ci'][1])}] | | |")
        lines.append(f"| {name}: images where the model's concentration is above the input's | {pair['model_higher']} "
                     f"of {pair['model_higher'] + pair['input_higher']} (sign test p = {format_value(pair['sign_test_p'])}) | | |")
        lines.append(_source_row(f'{name}: hue R over images', src, 'hue_resultant_length'))
        lines.append(_source_row(f'{name}: hue Rayleigh log10 p', src, 'hue_rayleigh_log10_p'))
        for key, label in (('theta', 'θ'), ('informative_theta', 'θ of the class-informative locations'),
                           ('phi', 'φ'), ('phi_relative_to_input', 'φ - φ_input')):
            if key not in src['model']:
                continue
            lines.append(_source_row(f'{name}: {label}: T (label-permutation p)', src, key, 'statistic'))
            lines.append(_source_row(f'{name}: {label}: T standardised against its own null', src, key, 'statistic_z'))
            lines.append(_source_row(f"{name}: {label}: decoding accuracy (chance {format_value(_get(src['model'], key, 'chance'))})",
                                     src, key, 'accuracy'))
            lines.append(_source_row(f'{name}: {label}: decoding p', src, key, 'accuracy_p_value'))
            null = _get(src['model'], key, 'channel_orders')
            if null:
                lines.append(f"| {name}: {label}: natural channel order among {null['orders']} random ones, by "
                             f"standardised T | {_order_text(null.get('standardised'))} | "
                             f"{_order_text(_get(src['input'], key, 'channel_orders', 'standardised'))} | |")
                lines.append(f"| {name}: {label}: the same by raw T | {_order_text(null.get('statistic'))} | "
                             f"{_order_text(_get(src['input'], key, 'channel_orders', 'statistic'))} | |")
        if 'informative_theta' in src['model']:
            lines.append(_source_row(f'{name}: share of class-informative locations (chance '
                                     f"{format_value(_get(src['model'], 'informative_theta', 'chance_share'))})",
                                     src, 'informative_theta', 'informative_share'))
    return '\n'.join(lines)


def verdicts_table(reports: Reports) -> str:
    """Each claim's verdict, dataset by dataset."""
    claims = [k for k in reports[0][1]['verdicts']]
    lines = ['| claim | question | ' + ' | '.join(name for name, _ in reports) + ' |',
             '|---|---|' + '---|' * len(reports)]
    for claim in claims:
        first = reports[0][1]['verdicts'][claim]
        cells = [f"**{_get(r, 'verdicts', claim, 'verdict') or 'not evaluated'}**" for _, r in reports]
        lines.append(f"| {claim}: {first['claim']} | {first.get('question', '')} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def claim_a_table(reports: Reports) -> str:
    """Claim (a)'s rule and each alternative choice, with its verdict and numbers, dataset by dataset."""
    lines = ['| test | question | ' + ' | '.join(name for name, _ in reports) + ' |', '|---|---|' + '---|' * len(reports)]
    verdicts = [r['verdicts']['sombrero'] for _, r in reports]
    rule = [f"**{v['verdict']}** ({_mean_map_text(r)})" for v, (_, r) in zip(verdicts, reports)]
    lines.append(f"| mean map, input energy = pixels² (the rule) | {verdicts[0]['question']} | " + ' | '.join(rule) + ' |')
    for i, alternative in enumerate(verdicts[0].get('sensitivity', [])):
        cells = [f"{_get(v, 'sensitivity', i, 'verdict')} ({_get(v, 'sensitivity', i, 'because')})" for v in verdicts]
        lines.append(f"| {alternative['choice']} | {alternative['question']} | " + ' | '.join(cells) + ' |')
    lines.append('| verdict robust to these choices | | ' + ' | '.join(
        'yes' if v.get('robust') else 'no' for v in verdicts) + ' |')
    return '\n'.join(lines)


def _mean_map_text(report: Dict[str, Any]) -> str:
    mm = report['controls']['concentration_model_vs_input'].get('mean_map') or {}
    if not mm.get('images'):
        return '-'
    return (f"model {format_value(mm['model'])}, input {format_value(mm['input'])}, difference "
            f"{format_value(mm['difference'])} [{format_value(mm['ci'][0])}, {format_value(mm['ci'][1])}]")


def per_image_table(reports: Reports) -> str:
    """Each control image's centre concentration, model and input (for a dataset of a few named images)."""
    lines = ['| data | image | model concentration | input concentration | model above input |', '|---|---|---|---|---|']
    for name, report in reports:
        per = report['controls']['concentration_model_vs_input']['per_image']
        names = per.get('names') or [str(i) for i in range(len(per['model']))]
        for image, m, i in sorted(zip(names, per['model'], per['input']), key=lambda row: -(row[1] or 0)):
            above = '-' if m is None or i is None else ('yes' if m > i else 'no')
            lines.append(f'| {name} | {image} | {format_value(m)} | {format_value(i)} | {above} |')
    return '\n'.join(lines)


def logits_table(reports: Reports) -> str:
    """Claim (b) at the logits: alignment with the class angle against its nulls and the random networks."""
    lines = ['| figure | ' + ' | '.join(name for name, _ in reports) + ' |', '|---|' + '---|' * len(reports)]
    rows: List[Tuple[str, Callable[[Dict[str, Any]], str]]] = [
        ('images (classes)', lambda r: f"{r['controls']['images']} ({r['meta']['classes']})"),
        ("alignment A of the logits' hue with the class angle (label-permutation p)",
         lambda r: f"{format_value(_get(r, 'controls', 'sources', 'model', 'logits', 'alignment'))} "
                   f"(p = {format_value(_get(r, 'controls', 'sources', 'model', 'logits', 'alignment_p_value'))})"),
        ('A of the random networks (min / median / max)',
         lambda r: _spread_text(source_values(r['controls']['sources']['random_init'], 'logits', 'alignment'))),
        ('natural class order among random class orders, by A',
         lambda r: _order_text(_get(r, 'controls', 'sources', 'model', 'logits', 'class_orders', 'alignment'))),
        ("logits' hue: T standardised against its own null (random networks)",
         lambda r: f"{format_value(_get(r, 'controls', 'sources', 'model', 'logits', 'statistic_z'))} "
                   f"({_spread_text(source_values(r['controls']['sources']['random_init'], 'logits', 'statistic_z'))})"),
        ("class decoded from the logits' hue (chance)",
         lambda r: f"{format_value(_get(r, 'controls', 'sources', 'model', 'logits', 'accuracy'))} "
                   f"({format_value(_get(r, 'controls', 'sources', 'model', 'logits', 'chance'))})"),
        ('verdict', lambda r: f"**{_get(r, 'verdicts', 'logit_hue_class', 'verdict') or 'not evaluated'}**"),
    ]
    for label, cell in rows:
        lines.append(f'| {label} | ' + ' | '.join(cell(r) for _, r in reports) + ' |')
    return '\n'.join(lines)


def statistics_table(reports: Reports) -> str:
    """The statistics of every analysed image (no controls), dataset by dataset."""
    rows: List[Tuple[str, Callable[[Dict[str, Any]], Any]]] = [
        ('images', lambda f: f['images']),
        ('map (channels x height x width)', lambda f: f"{f['map']['channels']} x {f['map']['height']} x {f['map']['width']}"),
        ('centre concentration (mean map)', lambda f: _get(f, 'energy', 'centre_concentration')),
        ('mean per-image concentration', lambda f: _get(f, 'energy', 'image_concentration_mean')),
        ('share of images with concentration > 1', lambda f: _get(f, 'energy', 'images_concentrated_share')),
        ('radial profile: mean energy, first / last ring', lambda f: _ring_text(f)),
        ('hue: R over images, Rayleigh log10 p', lambda f: f"{format_value(_get(f, 'hue', 'all', 'image_resultant_length'))}, "
                                                           f"{format_value(_get(f, 'hue', 'all', 'rayleigh_log10_p'))}"),
        ('permutation test of the hue θ class means: T (null mean), p', lambda f: _test_text(f, 'hue')),
        ('permutation test of the centroid angle φ class means: T (null mean), p', lambda f: _test_text(f, 'centroid_angle')),
    ]
    lines = ['| figure (every image) | ' + ' | '.join(name for name, _ in reports) + ' |', '|---|' + '---|' * len(reports)]
    for label, cell in rows:
        lines.append(f'| {label} | ' + ' | '.join(format_value(cell(r['figures'])) for _, r in reports) + ' |')
    return '\n'.join(lines)


def _ring_text(f: Dict[str, Any]) -> str:
    prof = _get(f, 'energy', 'radial_profile', 'mean_energy')
    return f'{format_value(prof[0])} / {format_value(prof[-1])}' if prof else '-'


def _test_text(f: Dict[str, Any], key: str) -> str:
    test = _get(f, 'permutation_test', key)
    if not test or test.get('statistic') is None:
        return '-'
    return f"{format_value(test['statistic'])} ({format_value(test['null_mean'])}), {format_value(test['p_value'])}"


def follows_table(reports: Reports) -> str:
    """scripts/follows_input.py's image-plane test: does phi follow the input's own centroid angle?"""
    lines = ['| network | maps | R of φ_net - φ_input (1 = follows the input) | mean offset (deg) |', '|---|---|---|---|']
    for name, report in reports:
        fol = report['follows_input']
        nets = [('trained', fol['model'])] + [(f'random init {i + 1}', r) for i, r in enumerate(fol['random_init'])]
        for net, r in nets:
            lines.append(f"| {name}: {net} | {r['images']} | {format_value(r['follow_resultant_length'])} | "
                         f"{format_value(r['mean_offset_deg'])} |")
    return '\n'.join(lines)


TABLES: Dict[str, Callable[[Reports], str]] = {
    'figures': figures_table, 'verdicts': verdicts_table, 'claim-a': claim_a_table, 'per-image': per_image_table,
    'logits': logits_table, 'statistics': statistics_table, 'follows': follows_table,
}


def summary_table(kind: str, reports: Reports) -> str:
    """The ``kind`` table (one of :data:`TABLES`) of ``reports``: (name, report.json) pairs."""
    if kind not in TABLES:
        raise ValueError(f'No table kind {kind!r}; the kinds are {", ".join(TABLES)}.')
    return TABLES[kind](reports)
