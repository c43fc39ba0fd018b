"""The image-plane test of ``--controls full`` alone, on a few digits: does phi follow the input?

    python scripts/follows_input.py [--images 64] [--seeds 2] [--output runs/follows_input.json]

Runs :func:`timm_u1.analysis.controls.run_controls` with a small custom level (transforms on) over the first
``--images`` test digits in ``analyze``'s shuffled order, and prints the ``follows_input`` section (and writes it,
with the settings, to ``--output``): R of phi_net - phi_input over rotated and off-centre-cropped copies (1 = the
network's energy centroid sits at a fixed angle from the input's), for the trained model and each random network.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm.data  # noqa: E402
import torch  # noqa: E402

from timm_u1.analysis.controls import ControlLevel, run_controls  # noqa: E402
from timm_u1.cli.options import Parser, integer, non_empty, seed  # noqa: E402
from timm_u1.data import class_names, load_image_dataset, make_loader  # noqa: E402
from timm_u1.files import write_json  # noqa: E402
from timm_u1.io.factory import DEFAULT_MODEL, create_model_from_spec  # noqa: E402


def main(argv=None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', type=non_empty, default=DEFAULT_MODEL)
    parser.add_argument('--images', type=integer(2, 450), default=64, help='test digits (default: %(default)s)')
    parser.add_argument('--seeds', type=integer(1, 100), default=2, help='random networks (default: %(default)s)')
    parser.add_argument('--seed', type=seed, default=0)
    parser.add_argument('--output', type=non_empty, default=None, help='also write the section to this JSON file')
    args = parser.parse_args(argv)

    model = create_model_from_spec(args.model).eval()
    ds = load_image_dataset('digits', split='test')
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed))[:args.images].tolist()
    ds = ds.select(order)  # analyze's order for the same seed
    cfg = timm.data.resolve_model_data_config(model)
    level = ControlLevel(images=None, seeds=args.seeds, orders=100, calibration_images=32, permutations=199,
                         transforms=True)
    controls = run_controls(model, make_loader(ds, model, batch_size=32), None, class_names(ds), level,
                            mean=cfg['mean'], std=cfg['std'], seed=args.seed)
    print(json.dumps(controls['follows_input'], indent=1))
    if args.output:
        write_json(args.output, {'settings': vars(args), 'follows_input': controls['follows_input']})
    return 0


if __name__ == '__main__':
    sys.exit(main())
