"""``timm-u1`` command line: the only place that knows about argv, stdout and exit codes.

One module per command (:mod:`.analyze`, :mod:`.memory`, :mod:`.train`, :mod:`.timm_train`, :mod:`.compare`,
:mod:`.finetune`, :mod:`.push`), each with ``add_parser(subparsers)``; every parser sets ``func``, called with the
parsed arguments. Library code raises errors that name the problem and its fix; :func:`main` turns
each into one line on stderr and exit code 1 (argparse's usage errors exit 2). ``TIMM_U1_DEBUG=1``
lets the traceback through instead.
"""
import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from .options import Parser

__all__ = ['main', 'build_parser', 'COMMANDS']

COMMANDS = ('analyze', 'memory', 'train', 'timm-train', 'compare', 'finetune', 'push')

# errors whose message is meant for the user: bad input, missing files, no network, a refused resume
_USER_ERRORS = (ValueError, OSError, ImportError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog='timm-u1', description='U(1) symmetry-breaking tools for timm models.')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND', parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f'{__name__}.{name.replace("-", "_")}').add_parser(subparsers)
    return parser


def one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line messages, such as lists of corrupt files, joined)."""
    text = ' '.join(line.strip() for line in str(error).splitlines() if line.strip())
    return text or type(error).__name__


def show_library_logs() -> None:
    """timm_u1's INFO log lines (e.g. which evaluation split was chosen) on stderr.

    Only when nothing else handles logging (no root handler: pytest's, or a script's ``basicConfig``,
    keep theirs), so that no line is shown twice.
    """
    package = logging.getLogger('timm_u1')
    if logging.getLogger().handlers or package.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(message)s'))
    package.addHandler(handler)
    package.setLevel(logging.INFO)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, 'func', None):
        parser.print_help(sys.stderr)
        return 2
    if not getattr(args, 'configures_logging', False):  # timm's train.py sets up its own
        show_library_logs()
    command = f'timm-u1 {args.command}'
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if os.environ.get('TIMM_U1_DEBUG'):
            raise
        print(f'{command}: interrupted; run the same command again to resume where it stopped.', file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get('TIMM_U1_DEBUG'):
            raise
        if isinstance(e, _USER_ERRORS):
            print(f'{command}: error: {one_line(e)}', file=sys.stderr)
        else:  # not a message for the user: a bug
            print(f'{command}: internal error: {type(e).__name__}: {one_line(e)} (rerun with TIMM_U1_DEBUG=1 '
                  f'for the traceback, and please report it)', file=sys.stderr)
        return 1
