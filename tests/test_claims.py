"""The U(1) claims against planted cases (issue 24, items 4 and 5): T standardised against its own null, the logits'
hue against the class angle with random class orders, the nearest-neighbour class-informative activations, the
verdict words where the class dependence is not the hue's, and claim (a)'s sensitivity to its arbitrary choices."""
import math

import pytest
import torch

from timm_u1.analysis.claims import CONTRADICTED, NOT_DISTINGUISHABLE, NOT_HUE_SPECIFIC, SUPPORTED, verdicts
from timm_u1.analysis.controls import ControlLevel, controls_from_maps
from timm_u1.analysis.decoding import AngleClassAccumulator
from timm_u1.analysis.informative import class_informative

LEVEL = ControlLevel(images=None, seeds=3, orders=60, calibration_images=32, permutations=99, order_permutations=99,
                     informative_images=None)


def _unit(angle: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.cos(angle), torch.sin(angle)], -1)


def _stream(acc: AngleClassAccumulator, unit: torch.Tensor, labels: torch.Tensor, batch: int = 25) -> dict:
    for i in range(0, len(labels), batch):
        acc.update(unit[i:i + batch], labels[i:i + batch])
    return acc.result()


def test_t_standardised_against_its_own_null_ranks_sources_that_raw_t_misranks():
    gen = torch.Generator().manual_seed(0)
    n, classes = 200, 4
    labels = torch.randint(0, classes, (n,), generator=gen)
    # concentrated angles (little spread) that do depend on the class ...
    signal = 0.3 * labels.double() + 0.15 * torch.randn(n, generator=gen, dtype=torch.float64)
    # ... and angles spread over the whole circle that do not
    spread = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    with_signal = _stream(AngleClassAccumulator(classes, permutations=199, seed=1), _unit(signal), labels)
    without = _stream(AngleClassAccumulator(classes, permutations=199, seed=1), _unit(spread), labels)
    # raw T reads the spread's larger null mean as an effect
    assert without['statistic'][0] > with_signal['statistic'][0]
    assert without['statistic_null_mean'] > with_signal['statistic_null_mean']
    # standardised, each against its own null, the ranking is right
    assert with_signal['statistic_z'] > 5 > 2 > without['statistic_z']
    null_sd = with_signal['statistic_null_sd']
    assert with_signal['statistic_z'] == pytest.approx(
        (with_signal['statistic'][0] - with_signal['statistic_null_mean']) / null_sd)


def test_every_variant_gets_its_own_standardised_t():
    gen = torch.Generator().manual_seed(1)
    n, classes = 120, 3
    labels = torch.randint(0, classes, (n,), generator=gen)
    angles = torch.stack([2.0 * labels.double(), 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)], 1)
    res = _stream(AngleClassAccumulator(classes, groups=2, permutations=99, group_permutations=49, seed=0),
                  _unit(angles), labels)
    z = res['statistic_z_groups']
    assert len(z) == 2 and z[0] > 5 and abs(z[1]) < 3
    # without group permutations the other variants are not standardised
    res = _stream(AngleClassAccumulator(classes, groups=2, permutations=99, seed=0), _unit(angles), labels)
    assert 'statistic_z_groups' not in res


def _classes(n, num_classes, seed):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=gen)], gen


def _noise_sources(labels, gen, channels=16):
    b = len(labels)
    inp = torch.rand(b, 48, 5, 5, generator=gen)
    randoms = [torch.rand(b, channels, 5, 5, generator=gen) for _ in range(LEVEL.seeds)]
    return inp, randoms


def _channel_pattern_batches(n=240, num_classes=4, channels=16, batch=40, seed=0):
    """Each class switches on its own random set of channels: the class shows in the hue under any channel
    order (the features carry it, not the hue); the input and the random networks carry no class."""
    labels, gen = _classes(n, num_classes, seed)
    patterns = (torch.rand(num_classes, channels, generator=gen) < 0.4).float() * 2
    out = []
    for i in range(0, n, batch):
        y = labels[i:i + batch]
        fmap = (patterns[y] + 0.3 * torch.rand(len(y), channels, generator=gen))[:, :, None, None].expand(
            -1, -1, 5, 5) + 0.05 * torch.rand(len(y), channels, 5, 5, generator=gen)
        inp, randoms = _noise_sources(y, gen, channels)
        out.append((y, fmap, inp, randoms))
    return out


def test_class_dependence_in_the_features_not_the_hue_is_named_so():
    v = verdicts(controls_from_maps(_channel_pattern_batches(), num_classes=4, level=LEVEL))['hue_class']
    assert v['verdict'] == NOT_HUE_SPECIFIC == 'class-dependent, not hue-specific', v
    assert 'random channel orders' in v['reason']
    assert v['numbers']['channel_order_null']['standardised']['p_value'] >= 0.05


def _logit_batches(kind, n=240, num_classes=6, batch=40, seed=0):
    """Logits of a trained classifier on ``num_classes`` classes beside flat maps, noise inputs and random heads.

    'smooth': a bump about the class in the natural class order (neighbouring classes also high), so the hue
    points at the class angle in the natural order more than in any other; 'peaked': only the true class is high
    (any class order puts the hue towards it); 'shuffled': peaked logits of other images (no class at all)."""
    labels, gen = _classes(n, num_classes, seed)
    k = torch.arange(num_classes).double()
    out = []
    for i in range(0, n, batch):
        y = labels[i:i + batch]
        b = len(y)
        if kind == 'smooth':
            logits = 2 * torch.cos(2 * math.pi * (k[None] - y[:, None]) / num_classes) + 1.2 * torch.randn(
                b, num_classes, generator=gen, dtype=torch.float64)
        else:
            target = y[torch.randperm(b, generator=gen)] if kind == 'shuffled' else y
            logits = 1.5 * torch.nn.functional.one_hot(target, num_classes) + 0.8 * torch.randn(
                b, num_classes, generator=gen, dtype=torch.float64)
        fmap = torch.ones(b, 16, 5, 5) + 0.1 * torch.rand(b, 16, 5, 5, generator=gen)
        inp, randoms = _noise_sources(y, gen)
        rand_logits = [torch.randn(b, num_classes, generator=gen) for _ in randoms]
        out.append((y, fmap, inp, randoms, logits.float(), rand_logits))
    return out


@pytest.mark.parametrize('kind, verdict', [
    ('smooth', SUPPORTED), ('peaked', NOT_HUE_SPECIFIC), ('shuffled', CONTRADICTED)])
def test_the_logits_hue_against_the_class_angle(kind, verdict):
    controls = controls_from_maps(_logit_batches(kind), num_classes=6, level=LEVEL)
    logits = controls['sources']['model']['logits']
    v = verdicts(controls)['logit_hue_class']
    assert v['verdict'] == verdict, v
    orders = logits['class_orders']['alignment']
    if kind != 'shuffled':
        assert logits['alignment'] > 0.2 and logits['alignment_p_value'] < 0.05
        # any class order leans towards the class; only the smooth logits' natural order beats the random ones
        assert orders['median'] > 0.1
        assert (orders['p_value'] < 0.05) == (kind == 'smooth')
    else:
        assert abs(logits['alignment']) < 0.15 and logits['alignment_p_value'] > 0.05
    assert all(abs(r['logits']['alignment']) < 0.2 for r in controls['sources']['random_init'])


def test_no_logits_means_no_logit_claim():
    controls = controls_from_maps(_channel_pattern_batches(), num_classes=4, level=LEVEL)
    v = verdicts(controls)['logit_hue_class']
    assert v['verdict'] is None and 'logits' in v['reason']


def test_nearest_neighbour_class_informative_locations():
    gen = torch.Generator().manual_seed(0)
    n, classes, channels = 40, 4, 12
    labels = torch.arange(n) % classes
    prototypes = torch.rand(classes, channels, generator=gen) * 3
    maps = 0.2 * torch.rand(n, channels, 3, 3, generator=gen)
    maps[:, :, 1, 1] += prototypes[labels]  # the centre location carries the class, the rest is noise
    mask, share = class_informative([maps], [labels])
    mask = mask[0]
    assert bool(mask[:, 1, 1].all())  # every centre's nearest neighbour (in another image) is a centre of its class
    noise = mask.clone()
    noise[:, 1, 1] = False
    assert float(noise.double().sum() / (n * 8)) < 0.5  # noise locations are informative at about chance
    assert 0 < share < 1


def _informative_batches(n=200, num_classes=4, channels=16, batch=40, seed=0):
    """The centre location of a model map holds a profile whose hue (natural order) is the class angle, under
    per-image channel noise; the other locations are louder noise. Over all locations the class is diluted; over
    the class-informative locations (mostly the centres) it is not."""
    labels, gen = _classes(n, num_classes, seed)
    k = torch.arange(channels)
    out = []
    for i in range(0, n, batch):
        y = labels[i:i + batch]
        profile = 1 + torch.cos(2 * math.pi * (k[None] / channels - y[:, None] / num_classes))
        fmap = 5 * torch.rand(len(y), channels, 5, 5, generator=gen)
        fmap[:, :, 2, 2] = 3 * (profile + 1.5 * torch.rand(len(y), channels, generator=gen))
        inp, randoms = _noise_sources(y, gen, channels)
        out.append((y, fmap, inp, randoms))
    return out


def test_class_informative_activations_concentrate_about_the_class_angle():
    controls = controls_from_maps(_informative_batches(), num_classes=4, level=LEVEL)
    model = controls['sources']['model']
    informative = model['informative_theta']
    assert informative['statistic_z'] > model['theta']['statistic_z'] + 3
    assert informative['accuracy'] > model['theta']['accuracy'] + 0.1
    assert informative['informative_share'] > informative['chance_share']
    v = verdicts(controls)['informative_hue_class']
    assert v['verdict'] in (SUPPORTED, NOT_HUE_SPECIFIC), v  # beyond the input and every random network


def _concentration_batches(model_maps, input_maps, labels=None):
    labels = labels if labels is not None else torch.zeros(len(model_maps), dtype=torch.long)
    gen = torch.Generator().manual_seed(3)
    randoms = [0.5 + torch.rand(*model_maps.shape, generator=gen) for _ in range(LEVEL.seeds)]
    return [(labels, model_maps, input_maps, randoms)]


def _bump(size=7, width=1.0):
    ys, xs = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing='ij')
    return torch.exp(-(xs ** 2 + ys ** 2) / (2 * width ** 2))


def test_claim_a_reports_the_mean_map_test_and_its_sensitivity():
    """Object images: strongly centred; texture images: flat, a little less centred than their input. The
    mean map (the paper's figure) is concentrated beyond the input; image by image it is not."""
    gen = torch.Generator().manual_seed(0)
    objects, textures = 6, 14
    bump, flat = _bump(), torch.ones(7, 7)
    model = torch.stack([4 * bump] * objects + [flat * 0.3] * textures)[:, None].expand(-1, 8, -1, -1).clone()
    model += 0.01 * torch.rand(model.shape, generator=gen)
    inp = torch.stack([0.5 + 0.1 * bump] * objects + [flat + 0.1 * bump] * textures)[:, None].expand(-1, 48, -1, -1)
    controls = controls_from_maps(_concentration_batches(model, inp.clone()), num_classes=0, level=LEVEL)
    pair = controls['concentration_model_vs_input']
    assert pair['mean_map']['difference'] > 0 and pair['mean_map']['ci'][0] > 0
    assert pair['model_higher'] == objects and pair['input_higher'] == textures
    v = verdicts(controls)['sombrero']
    assert v['verdict'] == SUPPORTED, v
    assert 'question' in v
    by_choice = {s['choice']: s for s in v['sensitivity']}
    assert by_choice['per-image sign test']['verdict'] == NOT_DISTINGUISHABLE
    assert all('question' in s for s in v['sensitivity'])
    assert v['robust'] is False and 'per-image sign test' in v['reason']


def test_the_inputs_energy_exponent_can_flip_claim_a():
    """A model map a little more concentrated than the input's pixels: input energy^2 is more concentrated."""
    bump = _bump(width=1.6)
    n = 30
    gen = torch.Generator().manual_seed(1)
    model = (bump ** 1.4)[None, None].expand(n, 8, -1, -1) * (1 + 0.05 * torch.rand(n, 8, 1, 1, generator=gen))
    inp = bump[None, None].expand(n, 48, -1, -1) * (1 + 0.05 * torch.rand(n, 48, 1, 1, generator=gen))
    controls = controls_from_maps(_concentration_batches(model.clone(), inp.clone()), num_classes=0, level=LEVEL)
    exponents = controls['concentration_model_vs_input']['input_exponents']
    assert exponents['1']['input'] < exponents['2']['input']
    v = verdicts(controls)['sombrero']
    assert v['verdict'] == SUPPORTED, v
    by_choice = {s['choice']: s for s in v['sensitivity']}
    assert by_choice['input energy^2']['verdict'] == NOT_DISTINGUISHABLE
    assert by_choice['input energy^0.5']['verdict'] == SUPPORTED
    assert v['robust'] is False
