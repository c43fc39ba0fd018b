"""Thin wrapper: ``python scripts/train.py ...`` / ``accelerate launch scripts/train.py ...`` run
``timm-u1 train ...`` (the trainer is :func:`timm_u1.training.train`; docs/training.md)."""
import sys

from timm_u1.cli.train import main

if __name__ == '__main__':
    sys.exit(main())
