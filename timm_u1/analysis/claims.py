"""The paper's claims and the rule that gives each its verdict from the controls section: ``supported`` (the
trained model differs from every control in the claimed direction), ``not distinguishable from controls`` or
``contradicted`` (the trained model itself does not show the effect), with the numbers it rests on."""
from typing import Any, Dict, List, Optional

from .formatting import format_value

__all__ = ['SUPPORTED', 'NOT_DISTINGUISHABLE', 'CONTRADICTED', 'ALPHA', 'verdicts', 'source_values', 'spread']

SUPPORTED = 'supported'
NOT_DISTINGUISHABLE = 'not distinguishable from controls'
CONTRADICTED = 'contradicted'
ALPHA = 0.05


def source_values(randoms: List[Dict[str, Any]], *keys: str) -> List[float]:
    """The number at ``keys`` of every source in ``randoms`` that has one."""
    out = []
    for r in randoms:
        v: Any = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            out.append(float(v))
    return out


def spread(values: List[float]) -> Dict[str, Optional[float]]:
    """min, median (upper) and max of ``values``; None each when there is none."""
    if not values:
        return {'min': None, 'median': None, 'max': None}
    s = sorted(values)
    return {'min': s[0], 'median': s[len(s) // 2], 'max': s[-1]}


def _claim_sombrero(c: Dict[str, Any]) -> Dict[str, Any]:
    src = c['sources']
    m, i = src['model'].get('centre_concentration'), src['input'].get('centre_concentration')
    rnd = source_values(src['random_init'], 'centre_concentration')
    pair = c['concentration_model_vs_input']
    numbers = {'model': m, 'input': i, 'random_init': spread(rnd),
               'images_model_above_input': pair['model_higher'], 'images_input_above_model': pair['input_higher'],
               'sign_test_p': pair['sign_test_p']}
    claim = 'bottleneck energy is concentrated about the image centre (sombrero), beyond what the input and the architecture give'
    if m is None:
        return {'claim': claim, 'verdict': None, 'reason': 'the map has no centre region (grid too small)', 'numbers': numbers}
    if m <= 1:
        return {'claim': claim, 'verdict': CONTRADICTED, 'numbers': numbers,
                'reason': f'the trained map is not concentrated at the centre (concentration {m:.3g} <= 1)'}
    above_input = i is None or (m > i and pair['model_higher'] > pair['input_higher'] and pair['sign_test_p'] < ALPHA)
    above_random = not rnd or m > max(rnd)
    if above_input and above_random:
        return {'claim': claim, 'verdict': SUPPORTED, 'numbers': numbers,
                'reason': f'concentration {m:.3g} above the input ({format_value(i)}, paired sign test p = {pair["sign_test_p"]:.2g}) '
                          f'and every random network (max {format_value(max(rnd) if rnd else None)})'}
    why = []
    if not above_input:
        why.append(f'the input itself gives {format_value(i)} (model {m:.3g}; per image the model is higher in '
                   f'{pair["model_higher"]} of {pair["model_higher"] + pair["input_higher"]}, sign test p = {pair["sign_test_p"]:.2g})')
    if not above_random:
        why.append(f'random networks give up to {max(rnd):.3g}')
    return {'claim': claim, 'verdict': NOT_DISTINGUISHABLE, 'numbers': numbers, 'reason': '; '.join(why)}


def _claim_angle(c: Dict[str, Any], key: str, claim: str, relative_key: Optional[str] = None,
                 hidden: bool = True) -> Dict[str, Any]:
    src = c['sources']
    mod = src['model'].get(key)
    if not c['labelled']:
        return {'claim': claim, 'verdict': None, 'reason': 'the data has no labels', 'numbers': {}}
    if mod is None:
        return {'claim': claim, 'verdict': None, 'reason': f'no {key} angle on this map', 'numbers': {}}
    inp = src['input'].get(key) or {}
    rnd_acc = source_values(src['random_init'], key, 'accuracy')
    rnd_t = source_values(src['random_init'], key, 'statistic')
    numbers: Dict[str, Any] = {
        'images': mod['images'], 'chance': mod['chance'],
        'model': {k: mod.get(k) for k in ('statistic', 'p_value', 'accuracy', 'accuracy_p_value')},
        'input': {k: inp.get(k) for k in ('statistic', 'p_value', 'accuracy', 'accuracy_p_value')},
        'random_init': {'statistic': spread(rnd_t), 'accuracy': spread(rnd_acc)},
    }
    if mod.get('p_value') is None or mod.get('accuracy_p_value') is None:
        return {'claim': claim, 'verdict': None, 'numbers': numbers,
                'reason': 'no label permutations (or no image with an angle), so no test of class dependence'}
    significant = min(mod['p_value'], mod['accuracy_p_value']) < ALPHA
    if not significant:
        return {'claim': claim, 'verdict': CONTRADICTED, 'numbers': numbers,
                'reason': f'the trained model shows no class dependence (T p = {format_value(mod.get("p_value"))}, '
                          f'decoding {format_value(mod["accuracy"])} vs chance {format_value(mod["chance"])}, p = {format_value(mod.get("accuracy_p_value"))})'}
    why = []
    acc = mod['accuracy']
    if inp.get('accuracy') is not None and not acc > inp['accuracy']:
        why.append(f'the input decodes the class as well ({inp["accuracy"]:.3f} vs model {acc:.3f})')
    if rnd_acc and not acc > max(rnd_acc):
        why.append(f'random networks decode up to {max(rnd_acc):.3f} (model {acc:.3f})')
    null = mod.get('channel_orders', {})
    if hidden and null.get('statistic'):
        s = null['statistic']
        numbers['channel_order_null'] = {k: s[k] for k in ('natural', 'median', 'q95', 'percentile', 'p_value')}
        numbers['channel_order_null']['accuracy_median'] = null.get('accuracy', {}).get('median')
        if not s['p_value'] < ALPHA:
            why.append(f'the natural channel order is not special: T {s["natural"]:.3g} at percentile '
                       f'{100 * s["percentile"]:.0f} of {null["orders"]} random orders (median {s["median"]:.3g})')
    if relative_key is not None:
        rel = src['model'].get(relative_key) or {}
        rnd_rel = source_values(src['random_init'], relative_key, 'accuracy')
        numbers['relative_to_input'] = {
            'model': {k: rel.get(k) for k in ('statistic', 'p_value', 'accuracy', 'accuracy_p_value')},
            'random_init': {'accuracy': spread(rnd_rel)}}
        # reported, not judged: where the input's own centroid is near the centre its angle is noise,
        # and the difference of two angles then carries none of the model's class signal
    if why:
        return {'claim': claim, 'verdict': NOT_DISTINGUISHABLE, 'numbers': numbers, 'reason': '; '.join(why)}
    return {'claim': claim, 'verdict': SUPPORTED, 'numbers': numbers,
            'reason': f'class decoded at {acc:.3f} (chance {mod["chance"]:.3f}), above the input '
                      f'({format_value(inp.get("accuracy"))}) and every random '
                      f'network' + (', natural channel order beyond the random orders' if hidden else '')}


def verdicts(controls: Dict[str, Any], hidden_layer: bool = True) -> Dict[str, Any]:
    """Per-claim verdicts from :func:`run_controls`' section: ``sombrero``, ``hue_class``, ``centroid_angle_class``.

    ``hidden_layer``: the map's channel order is arbitrary (every layer but the logits), so the hue
    must also beat the channel-order null.
    """
    return {
        'sombrero': _claim_sombrero(controls),
        'hue_class': _claim_angle(
            controls, 'theta', 'the activation hue theta depends on the class (symmetry breaking in activation space)',
            hidden=hidden_layer),
        'centroid_angle_class': _claim_angle(
            controls, 'phi', 'the energy-centroid angle phi depends on the class more than the input\'s own '
                             'centroid angle does (symmetry breaking in the image plane)', relative_key='phi_relative_to_input', hidden=False),
    }
