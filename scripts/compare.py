"""Thin wrapper: ``python scripts/compare.py ...`` runs ``timm-u1 compare ...`` (:mod:`timm_u1.studies.scratch`)."""
import sys

from timm_u1.cli import main

if __name__ == '__main__':
    sys.exit(main(['compare', *sys.argv[1:]]))
