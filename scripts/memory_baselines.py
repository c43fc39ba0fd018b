"""The memory methods of docs/memory.md beside the baselines that test claim (c), with McNemar p.

    python scripts/memory_baselines.py                                  # the table of docs/memory.md
    python scripts/memory_baselines.py --docs docs/memory.md            # ... and check the page holds it
    python scripts/memory_baselines.py --docs docs/memory.md --write    # ... or write it there
    python scripts/memory_baselines.py --limit 40 --img-size 32         # the smallest run (the test suite's)

One pass of the frozen offline Lite0 over the digits' train split fills an instance memory
(angle prototypes and exact per-location 1-NN, plus its pooled baselines CL2N and pooled 1-NN) and
a memory without angle bins; the same train maps, flattened with their layout kept, are the
position-kept 1-NN (``timm_u1.memory.baselines.position_kept_nn``), and the raw 8x8 pixels the
raw-pixel 1-NN. Every method is scored on the test digits and compared with the best by exact
McNemar (``timm_u1.memory.baselines.compare_methods``). The markdown table printed is the one
docs/memory.md shows, between the markers ``<!-- memory_baselines.py -->`` and ``<!-- /memory_baselines.py -->``.
"""
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from timm_u1.cli.options import Parser, integer, non_empty
from timm_u1.data import class_names, load_image_dataset, make_loader
from timm_u1.files import write_json, write_text
from timm_u1.io.factory import DEFAULT_MODEL, create_model_from_spec
from timm_u1.memory import AnglePrototypeMemory, extract_features
from timm_u1.memory.baselines import compare_methods, position_kept_nn, raw_pixel_nn

# every method's row label and whose it is (said beside every number)
ROWS = {
    'raw_pixel_nn': ('1-NN on the raw 8x8 pixels (no network)', 'baseline'),
    'position_kept_nn': ('1-NN on the flattened map, layout kept (`position_kept_nn`)', 'baseline'),
    'instance': ('instance memory (exact 1-NN per location, energy-weighted votes)', "the paper's"),
    'pooled_knn': ('k-NN of pooled features (k = 1)', 'baseline'),
    'prototype': ('angle-prototype memory (K = {bins} + centre)', "this project's"),
    'prototype_no_bins': ('angle-prototype memory without angle bins (K = 0)', "this project's (ablation)"),
    'cl2n': ('SimpleShot CL2N (nearest class mean of pooled features)', 'baseline'),
}
BEGIN, END = '<!-- memory_baselines.py -->', '<!-- /memory_baselines.py -->'


def run(model_spec: str, img_size: int, bins: int, batch_size: int, limit: Optional[int]) -> Dict[str, Any]:
    """Every method's predictions on the test digits, compared (compare_methods' dict, with the settings)."""
    start = time.perf_counter()
    model = create_model_from_spec(model_spec).eval()
    train, test = load_image_dataset('digits', 'train'), load_image_dataset('digits', 'test')
    if limit is not None:
        train, test = train.select(range(min(limit, len(train)))), test.select(range(min(limit, len(test))))
    names = class_names(train)
    memory = AnglePrototypeMemory.for_model(
        model, names, backbone=model_spec, img_size=img_size, mode='instance', num_bins=bins, k=1)
    no_bins = AnglePrototypeMemory.for_model(model, names, backbone=model_spec, img_size=img_size, num_bins=0)

    def maps(ds):
        out, labels = [], []
        for x, y in make_loader(ds, memory.data_config, batch_size=batch_size, shuffle=False):
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
    pixels = lambda ds: torch.tensor(np.stack([np.asarray(im.convert('L'), dtype=np.float64) for im in ds['image']]))  # noqa: E731
    predictions['raw_pixel_nn'] = raw_pixel_nn(pixels(train), torch.tensor(train['label']), pixels(test))
    if not torch.equal(torch.tensor(test['label']), test_labels):
        raise RuntimeError('the loader did not keep the dataset order')

    result = compare_methods(predictions, test_labels)
    result.update(model=model_spec, img_size=img_size, bins=bins, grid=list(train_maps.shape[-2:]),
                  train_images=len(train_labels), limit=limit, seconds=round(time.perf_counter() - start, 1))
    return result


def table(result: Dict[str, Any]) -> str:
    """The markdown table of docs/memory.md, rows by accuracy (ties in ROWS order)."""
    rows = sorted(result['methods'].items(), key=lambda kv: (-kv[1]['accuracy'], list(ROWS).index(kv[0])))
    lines = [f"| method | whose | top-1 accuracy ({result['images']} test images) | McNemar p vs best |",
             '|---|---|---|---|']
    for name, r in rows:
        label, whose = ROWS[name]
        label = label.format(bins=result['bins'])
        best = name == result['best']
        accuracy = f"**{r['accuracy']:.4f}**" if best else f"{r['accuracy']:.4f}"
        p = '(best)' if best else f"{r['mcnemar_p_vs_best']:.1e}"
        lines.append(f'| {label} | {whose} | {accuracy} | {p} |')
    return '\n'.join(lines)


def page_table(page: str) -> str:
    """The table between the markers of a docs page."""
    if BEGIN not in page or END not in page:
        raise ValueError(f'the page has no {BEGIN} ... {END} block')
    return page.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def main() -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', type=non_empty, default=DEFAULT_MODEL)
    parser.add_argument('--img-size', type=integer(1), default=96)
    parser.add_argument('--bins', type=integer(0, 360), default=8)
    parser.add_argument('--batch-size', type=integer(1), default=64)
    parser.add_argument('--limit', type=integer(1), default=None, help='the first N train and N test images only')
    parser.add_argument('--out', type=non_empty, default=None, help='write the results as JSON here')
    parser.add_argument('--docs', type=non_empty, default=None, metavar='PAGE',
                        help="check that PAGE's memory_baselines table is this run's (exit 1 if not)")
    parser.add_argument('--write', action='store_true', help='with --docs: write the table into PAGE instead')
    args = parser.parse_args()
    if args.write and not args.docs:
        parser.error('--write needs --docs PAGE')

    result = run(args.model, args.img_size, args.bins, args.batch_size, args.limit)
    markdown = table(result)
    print(f"{args.model}, digits, {result['images']} test images, input {args.img_size}px -> "
          f"{result['grid']} grid; best: {result['best']} ({result['seconds']} s)\n")
    print(markdown)
    if args.out:
        write_json(args.out, result)
    if args.docs:
        path = Path(args.docs)
        page = path.read_text(encoding='utf-8')
        if args.write:
            old = page_table(page)
            write_text(path, page.replace(old, markdown, 1))
            print(f'wrote the table into {path}')
        elif page_table(page) != markdown:
            print(f'{path} does not hold this table; rerun with --write to update it.', file=sys.stderr)
            return 1
        else:
            print(f'{path} holds this table.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
