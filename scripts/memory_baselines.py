"""The memory methods of docs/memory.md beside the baselines that test claim (c), with McNemar p.

    python scripts/memory_baselines.py [--img-size 96] [--bins 8] [--out runs/memory_baselines.json]

One pass of the frozen offline Lite0 over the digits' train split fills an instance memory
(angle prototypes and exact per-location 1-NN, plus its pooled baselines CL2N and pooled 1-NN) and
a memory without angle bins; the same train maps, flattened with their layout kept, are the
position-kept 1-NN (``timm_u1.baselines.position_kept_nn``), and the raw 8x8 pixels the raw-pixel
1-NN. Every method is scored on the 450 test digits and compared with the best by exact McNemar
(``timm_u1.baselines.compare_methods``).
"""
import argparse
import time

import numpy as np
import torch

from timm_u1.files import write_json
from timm_u1.memory.baselines import compare_methods, position_kept_nn, raw_pixel_nn
from timm_u1.data import class_names, load_image_dataset, make_loader
from timm_u1.io.factory import DEFAULT_MODEL, create_model_from_spec
from timm_u1.memory import AnglePrototypeMemory, extract_features

# what is the paper's and what is this project's own (said beside every number)
ORIGIN = {
    'instance': "paper's: plain nearest-neighbour memory of bottleneck vectors (per location, energy-weighted votes)",
    'prototype': "this project's own: angle-prototype memory (K angle bins + centre)",
    'prototype_no_bins': "this project's own, ablation: one prototype per class, no angle bins",
    'cl2n': 'baseline: SimpleShot CL2N on pooled features',
    'pooled_knn': 'baseline: 1-NN on pooled features',
    'position_kept_nn': 'baseline: 1-NN on the flattened map (layout kept, no bins, no votes)',
    'raw_pixel_nn': 'baseline: 1-NN on the raw 8x8 pixels (no network)',
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--img-size', type=int, default=96)
    parser.add_argument('--bins', type=int, default=8)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--out', default=None, help='write the results as JSON here')
    args = parser.parse_args()

    start = time.perf_counter()
    model = create_model_from_spec(args.model).eval()
    train, test = load_image_dataset('digits', 'train'), load_image_dataset('digits', 'test')
    names = class_names(train)
    memory = AnglePrototypeMemory.for_model(
        model, names, backbone=args.model, img_size=args.img_size, mode='instance', num_bins=args.bins, k=1)
    no_bins = AnglePrototypeMemory.for_model(model, names, backbone=args.model, img_size=args.img_size, num_bins=0)

    def maps(ds):
        out, labels = [], []
        with torch.inference_mode():
            for x, y in make_loader(ds, memory.data_config, batch_size=args.batch_size, shuffle=False):
                out.append(extract_features(model, x))
                labels.append(torch.as_tensor(y))
        return torch.cat(out), torch.cat(labels)

    train_maps, train_labels = maps(train)
    memory.add_features(train_maps, train_labels)
    no_bins.add_features(train_maps, train_labels)
    test_maps, test_labels = maps(test)

    predictions = {m: memory.predict_from_features(test_maps, m) for m in ('instance', 'prototype', 'cl2n', 'pooled_knn')}
    predictions['prototype_no_bins'] = no_bins.predict_from_features(test_maps, 'prototype')
    predictions['position_kept_nn'] = position_kept_nn(train_maps, train_labels, test_maps)
    pixels = lambda ds: torch.tensor(np.stack([np.asarray(im.convert('L'), dtype=np.float64) for im in ds['image']]))
    predictions['raw_pixel_nn'] = raw_pixel_nn(pixels(train), torch.tensor(train['label']), pixels(test))
    assert torch.equal(torch.tensor(test['label']), test_labels)  # the loader kept the dataset's order

    result = compare_methods(predictions, test_labels)
    result.update(model=args.model, img_size=args.img_size, bins=args.bins, grid=list(train_maps.shape[-2:]),
                  train_images=len(train_labels), seconds=round(time.perf_counter() - start, 1))
    print(f"{args.model}, digits, {result['images']} test images, input {args.img_size}px -> "
          f"{tuple(train_maps.shape[1:])} maps; best: {result['best']}")
    print('| method | origin | accuracy | McNemar p vs best |\n|---|---|---|---|')
    for name, r in sorted(result['methods'].items(), key=lambda kv: -kv[1]['accuracy']):
        print(f"| {name} | {ORIGIN[name]} | {r['accuracy']:.4f} | {r['mcnemar_p_vs_best']:.2g} |")
    print(f"({result['seconds']} s)")
    if args.out:
        write_json(args.out, result)


if __name__ == '__main__':
    main()
