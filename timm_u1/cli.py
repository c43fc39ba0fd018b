"""``timm-u1`` command line.

Each sub-command lives beside the code it drives: a module listed in ``_COMMAND_MODULES`` defines
``add_commands(subparsers)``, and every parser it adds sets ``func`` (called with the parsed args;
its return value is the exit code).
"""
import argparse
import importlib
import os
import sys
from typing import List, Optional

_COMMAND_MODULES = (
    'timm_u1.analyze',  # timm-u1 analyze
    'timm_u1.memory',  # timm-u1 memory build | eval
    'timm_u1.publish',  # timm-u1 push
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='timm-u1',
        description='U(1) symmetry-breaking tools for timm models.',
    )
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # command not built yet
        module.add_commands(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, 'func', None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as e:
        # bad input is named by the error itself; a traceback would bury it (TIMM_U1_DEBUG=1 shows it)
        if os.environ.get('TIMM_U1_DEBUG'):
            raise
        print(f'timm-u1 {args.command}: error: {e}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
