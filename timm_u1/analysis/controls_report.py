"""The controls' part of ``report.md``: each claim's verdict and the question it answers, claim (a)'s tests and
their sensitivity, and the trained model beside the input and the random networks."""
from typing import Any, Dict, List

from .claims import source_values, spread
from .formatting import format_value

__all__ = ['controls_markdown']

# up to this many control images, report.md lists each image's centre concentration
PER_IMAGE_ROWS = 50
# (label, key) of the per-image angles compared source by source
_ANGLES = (('hue θ', 'theta'), ('hue θ of the class-informative locations', 'informative_theta'),
           ('centroid angle φ', 'phi'), ("φ minus the input's φ", 'phi_relative_to_input'))


def controls_markdown(controls: Dict[str, Any], claims: Dict[str, Any]) -> List[str]:
    """Lines of report.md: the verdicts, claim (a)'s sensitivity, then the model beside its controls."""
    lines = ['## Verdicts', '', '| claim | question | verdict | because |', '|---|---|---|---|']
    for name, v in claims.items():
        lines.append(f"| {name}: {v['claim']} | {v.get('question', '')} | **{v['verdict'] or 'not evaluated'}** | "
                     f"{v['reason']} |")
    lines += _sombrero_lines(controls, claims.get('sombrero') or {})
    lines += _sources_table(controls)
    lines += _null_lines(controls)
    return lines + ['']


def _sombrero_lines(controls: Dict[str, Any], verdict: Dict[str, Any]) -> List[str]:
    pair = controls['concentration_model_vs_input']
    lines = ['', '## Claim (a): which test answers which question', '',
             f"Per image, the model's centre concentration is above the input's in {pair['model_higher']} and below "
             f"in {pair['input_higher']} of {pair['images']} images (sign test p = {format_value(pair['sign_test_p'])})."]
    mean_map = pair.get('mean_map')
    if mean_map and mean_map.get('images'):
        lines[-1] += (f" Mean maps: model {format_value(mean_map['model'])}, input {format_value(mean_map['input'])}, "
                      f"difference {format_value(mean_map['difference'])} (95 % interval over {mean_map['resamples']} "
                      f"image-bootstrap resamples [{format_value(mean_map['ci'][0])}, {format_value(mean_map['ci'][1])}]).")
    if verdict.get('sensitivity'):
        lines += ['', '| test | question | verdict | because |', '|---|---|---|---|',
                  f"| mean map, input energy = pixels² (the rule) | {verdict['question']} | **{verdict['verdict']}** | "
                  f"{verdict['reason'].split('; not robust')[0]} |"]
        lines += [f"| {s['choice']} | {s['question']} | {s['verdict']} | {s['because']} |" for s in verdict['sensitivity']]
        lines += ['', 'The verdict is ' + ('robust to these choices.' if verdict['robust'] else
                                           'not robust to these choices (see the rows whose verdict differs).')]
    per_image = pair.get('per_image') or {}
    model = per_image.get('model') or []
    if 0 < len(model) <= PER_IMAGE_ROWS:
        names = per_image.get('names') or [str(i) for i in range(len(model))]
        lines += ['', '| image | model concentration | input concentration |', '|---|---|---|']
        lines += [f'| {n} | {format_value(m)} | {format_value(i)} |' for n, m, i in zip(names, model, per_image['input'])]
    return lines


def _sources_table(controls: Dict[str, Any]) -> List[str]:
    src, rnd, lv = controls['sources'], controls['sources']['random_init'], controls['level']
    lines = ['', f"## Model beside its controls ({controls['images']} images, controls '{lv['name']}')", '',
             f"Input baseline: {controls['input_baseline']}. Random networks: {controls['random_init']['seeds']} "
             f"seeds, {controls['random_init']['initialisation']}, {controls['random_init']['batchnorm']}. "
             f"Decoding: {controls['decoding']}. Channel-order null: {controls['channel_order_null']}. "
             f"Class-informative locations: {controls.get('informative', '-')}. T is compared between sources "
             f"standardised against each source's own label null (z = (T - null mean) / null sd): its null mean "
             f"grows with the spread of the angles.", '',
             '| figure | trained model | input | random init (min / median / max) |', '|---|---|---|---|']

    def row(label: str, *keys: str) -> None:
        def get(d):
            for k in keys:
                d = d.get(k) if isinstance(d, dict) else None
            return d
        r = spread(source_values(rnd, *keys))
        lines.append(f"| {label} | {format_value(get(src['model']))} | {format_value(get(src['input']))} | "
                     f"{format_value(r['min'])} / {format_value(r['median'])} / {format_value(r['max'])} |")

    row('centre concentration (mean map)', 'centre_concentration')
    row('mean per-image concentration', 'image_concentration_mean')
    row('hue R over images', 'hue_resultant_length')
    row('hue Rayleigh log10 p (uniformity, not class)', 'hue_rayleigh_log10_p')
    for label, key in _ANGLES:
        if key in src['model']:
            row(f'{label}: class statistic T', key, 'statistic')
            row(f'{label}: T standardised against its own null', key, 'statistic_z')
            row(f'{label}: T label-permutation p', key, 'p_value')
            row(f'{label}: decoding accuracy', key, 'accuracy')
            row(f'{label}: decoding p', key, 'accuracy_p_value')
            row(f'{label}: chance', key, 'chance')
    if 'informative_theta' in src['model']:
        row('share of locations that are class-informative', 'informative_theta', 'informative_share')
        row('the same share by chance', 'informative_theta', 'chance_share')
    if 'logits' in src['model']:
        row("logits' hue: alignment A with the class angle", 'logits', 'alignment')
        row("logits' hue: A label-permutation p", 'logits', 'alignment_p_value')
        row("logits' hue: T standardised against its own null", 'logits', 'statistic_z')
        row("logits' hue: decoding accuracy", 'logits', 'accuracy')
    elif controls.get('logits_skipped'):
        lines += ['', f"The logits' hue is not analysed: {controls['logits_skipped']}."]
    return lines


def _order_sentence(what: str, null: Dict[str, Any], figure: str, name: str) -> str:
    s = null.get(figure)
    if not s:
        return ''
    return (f"{what}: the natural order's {name} = {format_value(s['natural'])} is at percentile "
            f"{100 * s['percentile']:.0f} of {null['orders']} random orders (median {format_value(s['median'])}, 95th "
            f"percentile {format_value(s['q95'])}, p = {format_value(s['p_value'])}).")


def _null_lines(controls: Dict[str, Any]) -> List[str]:
    src, lines = controls['sources'], []
    for key, what in (('theta', 'hue θ'), ('informative_theta', 'hue θ of the class-informative locations')):
        null = src['model'].get(key, {}).get('channel_orders', {})
        text = ' '.join(t for t in (
            _order_sentence(f'Channel-order null of the {what}, by standardised T', null, 'standardised', 'z'),
            _order_sentence('By raw T', null, 'statistic', 'T'),
            _order_sentence('By decoding', null, 'accuracy', 'accuracy')) if t)
        if text:
            lines += ['', text]
    orders = src['model'].get('logits', {}).get('class_orders', {})
    text = _order_sentence("Class-order null of the logits' hue, by alignment A", orders, 'alignment', 'A')
    if text:
        lines += ['', text + " Any class order (the logits and the label hues relabelled alike) leaves a classifier's "
                             "logits peaked at the true class."]
    fol = controls.get('follows_input')
    if fol:
        rr = spread([r['follow_resultant_length'] for r in fol['random_init'] if r['follow_resultant_length'] is not None])
        lines += ['', f"Image-plane angle on {', '.join(fol['transforms'])} copies ({fol['model']['images']} maps): "
                      f"R of φ_net - φ_input = {format_value(fol['model']['follow_resultant_length'])} for the trained "
                      f"model, {format_value(rr['min'])} / {format_value(rr['median'])} / {format_value(rr['max'])} for "
                      f"the random networks (1 = follows the input)."]
    return lines
