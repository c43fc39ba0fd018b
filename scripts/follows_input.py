"""The image-plane test of ``--controls full`` alone, on a few digits: does phi follow the input?

    python scripts/follows_input.py [--images 64] [--seeds 2]

Runs :func:`timm_u1.analysis.controls.run_controls` with a small custom level (transforms on) over the first
``--images`` test digits in ``analyze``'s shuffled order, and prints the ``follows_input`` section:
R of phi_net - phi_input over rotated and off-centre-cropped copies (1 = the network's energy
centroid sits at a fixed angle from the input's), for the trained model and each random network.
"""
import argparse
import json

import timm.data
import torch

from timm_u1.analysis.controls import ControlLevel, run_controls
from timm_u1.data import class_names, load_image_dataset, make_loader
from timm_u1.io.factory import DEFAULT_MODEL, create_model_from_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--images', type=int, default=64)
    parser.add_argument('--seeds', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

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


if __name__ == '__main__':
    main()
