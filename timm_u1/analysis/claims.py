"""The paper's claims and the rule, fixed before looking at any result, that gives each its verdict from the
controls section: ``supported``, ``class-dependent, not hue-specific``, ``not distinguishable from controls`` or
``contradicted``, with the question each test answers and the numbers it rests on (docs/analysis.md)."""
from typing import Any, Dict, List, Optional, Tuple

from .formatting import format_value

__all__ = ['SUPPORTED', 'NOT_HUE_SPECIFIC', 'NOT_DISTINGUISHABLE', 'CONTRADICTED', 'ALPHA', 'verdicts',
           'source_values', 'spread']

SUPPORTED = 'supported'
NOT_HUE_SPECIFIC = 'class-dependent, not hue-specific'
NOT_DISTINGUISHABLE = 'not distinguishable from controls'
CONTRADICTED = 'contradicted'
ALPHA = 0.05

SOMBRERO_QUESTION = ("Is the mean energy map (the paper's figure) more concentrated at the centre than the input's "
                     "mean map (95 % image-bootstrap interval of the difference above 0) and every random network's?")
SIGN_TEST_QUESTION = ("Is a typical image's map more concentrated at the centre than its own input "
                      "(per-image sign test)?")
EXPONENT_QUESTION = ("Does the mean-map answer hold with the input's energy taken as pixels^{power} instead of "
                     "pixels^2 (the input's energy scale is arbitrary)?")


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


# --- claim (a): the sombrero ----------------------------------------------------------------------

def _mean_map_verdict(m: float, test: Optional[Dict[str, Any]], rnd: List[float]) -> Tuple[str, List[str]]:
    """The verdict of the mean-map rule for one input test (mean_map_test's dict), with the reasons it fails."""
    if m <= 1:
        return CONTRADICTED, [f'the trained map is not concentrated at the centre (concentration {m:.3g} <= 1)']
    why = []
    if test and test.get('images'):
        low, high = test['ci']
        if not low > 0:
            why.append(f"the input gives {test['input']:.3g} (model {test['model']:.3g}, difference "
                       f"{test['difference']:.3g}, 95 % interval [{low:.2g}, {high:.2g}])")
    if rnd and not m > max(rnd):
        why.append(f'random networks give up to {max(rnd):.3g}')
    return (NOT_DISTINGUISHABLE if why else SUPPORTED), why


def _claim_sombrero(c: Dict[str, Any]) -> Dict[str, Any]:
    src, pair = c['sources'], c['concentration_model_vs_input']
    m, i = src['model'].get('centre_concentration'), src['input'].get('centre_concentration')
    rnd = source_values(src['random_init'], 'centre_concentration')
    mean_map = pair.get('mean_map')
    numbers = {'model': m, 'input': i, 'random_init': spread(rnd), 'mean_map': mean_map,
               'images_model_above_input': pair['model_higher'], 'images_input_above_model': pair['input_higher'],
               'sign_test_p': pair['sign_test_p']}
    claim = 'bottleneck energy is concentrated about the image centre (sombrero), beyond what the input and the architecture give'
    out = {'claim': claim, 'question': SOMBRERO_QUESTION, 'numbers': numbers}
    if m is None:
        return dict(out, verdict=None, reason='the map has no centre region (grid too small)')
    verdict, why = _mean_map_verdict(m, mean_map, rnd)
    if verdict == SUPPORTED:
        interval = (f", difference {mean_map['difference']:.3g}, 95 % interval [{mean_map['ci'][0]:.2g}, "
                    f"{mean_map['ci'][1]:.2g}]") if mean_map and mean_map.get('images') else ''
        reason = (f'mean-map concentration {m:.3g} above the input ({format_value(i)}{interval}) and every random '
                  f'network (max {format_value(max(rnd) if rnd else None)})')
    else:
        reason = '; '.join(why)
    sensitivity = _sombrero_sensitivity(m, pair, rnd)
    flips = [s for s in sensitivity if s['verdict'] != verdict]
    if flips:
        reason += '; not robust: ' + '; '.join(f"{s['choice']} gives {s['verdict']} ({s['because']})" for s in flips)
    return dict(out, verdict=verdict, reason=reason, sensitivity=sensitivity, robust=not flips)


def _sombrero_sensitivity(m: float, pair: Dict[str, Any], rnd: List[float]) -> List[Dict[str, Any]]:
    """The verdict under each alternative choice: the per-image sign test, and other input energy exponents."""
    higher, lower, p = pair['model_higher'], pair['input_higher'], pair['sign_test_p']
    if m <= 1:
        sign = CONTRADICTED
    else:
        sign = SUPPORTED if higher > lower and p < ALPHA and (not rnd or m > max(rnd)) else NOT_DISTINGUISHABLE
    out = [{'choice': 'per-image sign test', 'question': SIGN_TEST_QUESTION, 'verdict': sign,
            'because': f'model above its input in {higher} of {higher + lower} images, p = {p:.2g}'}]
    for key, test in (pair.get('input_exponents') or {}).items():
        if key == '1' or not test.get('images'):
            continue
        verdict, _ = _mean_map_verdict(m, test, rnd)
        out.append({'choice': f'input energy^{key}', 'question': EXPONENT_QUESTION.format(power=2 * float(key)),
                    'verdict': verdict, 'input': test['input'], 'difference': test['difference'], 'ci': test['ci'],
                    'because': f"input {test['input']:.3g}, interval [{test['ci'][0]:.2g}, {test['ci'][1]:.2g}]"})
    return out


# --- claim (b): class dependence of an angle -----------------------------------------------------------

def _figures(entry: Dict[str, Any]) -> Dict[str, Any]:
    return {k: entry.get(k) for k in ('statistic', 'statistic_z', 'p_value', 'accuracy', 'accuracy_p_value')}


def _beyond_controls(mod: Dict[str, Any], controls: List[Tuple[str, Dict[str, Any]]]) -> List[str]:
    """What keeps the model's class dependence from exceeding every control (empty: it exceeds them all), compared
    by decoding accuracy and by T standardised against each source's own label null."""
    why = []
    for figure, label, digits in (('accuracy', 'decodes the class', 3), ('statistic_z', 'has a standardised T', 2)):
        mine = mod.get(figure)
        theirs = [(name, e.get(figure)) for name, e in controls if e.get(figure) is not None]
        if mine is None:
            why.append(f'the trained model has no {figure}')
            continue
        match = [f'{name} {value:.{digits}g}' for name, value in theirs if not mine > value]
        if match:
            why.append(f"{', '.join(match)} {label} as well (model {mine:.{digits}g})")
    return why


def _class_claim(c: Dict[str, Any], key: str, claim: str, question: str, hidden: bool) -> Dict[str, Any]:
    """The rule of a class-dependent angle (theta, theta over class-informative locations, phi)."""
    src = c['sources']
    mod = src['model'].get(key)
    out = {'claim': claim, 'question': question, 'numbers': {}}
    if not c['labelled']:
        return dict(out, verdict=None, reason='the data has no labels')
    if mod is None:
        return dict(out, verdict=None, reason=f'no {key} angle on this map')
    inp = src['input'].get(key) or {}
    randoms = [(f"random network {r.get('seed')}", r.get(key) or {}) for r in src['random_init']]
    out['numbers'] = {
        'images': mod['images'], 'chance': mod['chance'], 'model': _figures(mod), 'input': _figures(inp),
        'random_init': {f: spread(source_values(src['random_init'], key, f)) for f in ('statistic', 'statistic_z',
                                                                                       'accuracy')}}
    if mod.get('p_value') is None or mod.get('accuracy_p_value') is None:
        return dict(out, verdict=None,
                    reason='no label permutations (or no image with an angle), so no test of class dependence')
    if not min(mod['p_value'], mod['accuracy_p_value']) < ALPHA:
        return dict(out, verdict=CONTRADICTED, reason=(
            f'the trained model shows no class dependence (T p = {format_value(mod.get("p_value"))}, decoding '
            f'{format_value(mod["accuracy"])} vs chance {format_value(mod["chance"])}, p = '
            f'{format_value(mod.get("accuracy_p_value"))})'))
    why = _beyond_controls(mod, [('the input', inp)] + randoms)
    if why:
        return dict(out, verdict=NOT_DISTINGUISHABLE, reason='; '.join(why))
    beyond = (f"class decoded at {mod['accuracy']:.3f} (chance {mod['chance']:.3f}) and standardised T "
              f"{format_value(mod.get('statistic_z'))}, above the input and every random network")
    if not hidden:
        return dict(out, verdict=SUPPORTED, reason=beyond)
    null = mod.get('channel_orders', {})
    z = null.get('standardised') or null.get('statistic')
    if not z:
        return dict(out, verdict=SUPPORTED, reason=beyond)
    out['numbers']['channel_order_null'] = {
        'standardised': {k: z[k] for k in ('natural', 'median', 'q95', 'percentile', 'p_value')},
        'accuracy_median': null.get('accuracy', {}).get('median')}
    order = (f"the natural order's standardised T {z['natural']:.3g} at percentile {100 * z['percentile']:.0f} of "
             f"{null['orders']} random channel orders (median {z['median']:.3g}, p = {z['p_value']:.2g})")
    return _order_verdict(out, beyond, order, z['p_value'], (
        f'no more than under random channel orders: {order}; the class is in the features, not in their hue'))


def _order_verdict(out: Dict[str, Any], beyond: str, order: str, p_value: float, caveat: str) -> Dict[str, Any]:
    """The hue claims' last step, once a class dependence beyond the controls is shown: supported only if the
    natural order (of channels, or of classes on the circle) beats random orders; else class-dependent, not
    hue-specific, with ``caveat`` saying why."""
    if p_value < ALPHA:
        return dict(out, verdict=SUPPORTED, reason=f'{beyond}; {order}')
    return dict(out, verdict=NOT_HUE_SPECIFIC, reason=f'{beyond}, but {caveat}')


def _logit_claim(c: Dict[str, Any]) -> Dict[str, Any]:
    """Claim (b) where the paper makes it: the logits' hue leans toward the class's label hue."""
    src = c['sources']
    lg = src['model'].get('logits')
    out = {'claim': "the logits' hue (channel c = class c) concentrates about the class's label hue 2 pi c / C",
           'question': ("Does the logits' hue lean toward the class angle (alignment A = mean cos(theta - theta_c)) "
                        "beyond random networks, and more in the natural class order than in random class orders?"),
           'numbers': {}}
    if lg is None or not c['labelled']:
        return dict(out, verdict=None, reason=f"the logits' hue was not analysed: {c.get('logits_skipped') or 'no labels'}")
    rnd = [(f"random network {r.get('seed')}", r.get('logits') or {}) for r in src['random_init']]
    orders = lg.get('class_orders', {}).get('alignment')
    out['numbers'] = {'model': {**_figures(lg), 'alignment': lg['alignment'], 'alignment_p_value': lg.get('alignment_p_value')},
                      'random_init': {'alignment': spread([e['alignment'] for _, e in rnd if 'alignment' in e])},
                      'class_orders': {k: orders[k] for k in ('natural', 'median', 'percentile', 'p_value')} if orders else None}
    if lg.get('alignment_p_value') is None:
        return dict(out, verdict=None, reason='no label permutations, so no test of the alignment')
    if not lg['alignment_p_value'] < ALPHA:
        return dict(out, verdict=CONTRADICTED, reason=(
            f"the logits' hue does not lean toward the class angle (A = {lg['alignment']:.3g}, label-permutation "
            f"p = {lg['alignment_p_value']:.2g})"))
    why = [f'{name} has A = {e["alignment"]:.3g} (model {lg["alignment"]:.3g})' for name, e in rnd
           if e.get('alignment') is not None and not lg['alignment'] > e['alignment']]
    why += _beyond_controls(lg, [('the input', src['input'].get('theta') or {})] + rnd)
    if why:
        return dict(out, verdict=NOT_DISTINGUISHABLE, reason='; '.join(why))
    beyond = f"A = {lg['alignment']:.3g} (p = {lg['alignment_p_value']:.2g}), above every random network"
    if not orders:
        return dict(out, verdict=SUPPORTED, reason=beyond)
    order = (f"the natural class order's A at percentile {100 * orders['percentile']:.0f} of {len(orders['values'])} "
             f"random class orders (median {orders['median']:.3g}, p = {orders['p_value']:.2g})")
    return _order_verdict(out, beyond, order, orders['p_value'], (
        f"random class orders lean as much: {order}; a classifier's logits point at their class under any order"))


def verdicts(controls: Dict[str, Any], hidden_layer: bool = True) -> Dict[str, Any]:
    """Per-claim verdicts from :func:`timm_u1.analysis.controls.run_controls`' section.

    ``hidden_layer``: the map's channel order is arbitrary (every layer but the logits), so the hue
    must also beat the channel-order null to be hue-specific.
    """
    theta_q = ('Does theta depend on the class beyond the input and every random network, and in the natural channel '
               'order more than in random ones?')
    return {
        'sombrero': _claim_sombrero(controls),
        'hue_class': _class_claim(
            controls, 'theta', 'the activation hue theta depends on the class (symmetry breaking in activation space)',
            theta_q, hidden=hidden_layer),
        'informative_hue_class': _class_claim(
            controls, 'informative_theta', 'the hue theta of the class-informative activations (nearest neighbour of '
                                           'the same class) depends on the class', theta_q, hidden=hidden_layer),
        'logit_hue_class': _logit_claim(controls),
        'centroid_angle_class': _class_claim(
            controls, 'phi', 'the energy-centroid angle phi depends on the class more than the input\'s own '
                             'centroid angle does (symmetry breaking in the image plane)',
            'Does phi depend on the class beyond the input and every random network?', hidden=False),
    }
