"""``timm-u1`` command line: the only place that knows about argv, stdout and exit codes.

One module per command (:mod:`.analyze`, :mod:`.memory`, :mod:`.train`, :mod:`.timm_train`, :mod:`.compare`,
:mod:`.finetune`, :mod:`.push`), each with ``add_parser(subparsers)``; every parser sets ``func``, called with the
parsed arguments. The commands and their summaries are listed in :mod:`timm_u1_launcher`, the console
script, which answers ``timm-u1 --help`` without loading the library. Library code raises errors that
name the problem and its fix; :func:`main` turns each into one line on stderr and exit code 1 (argparse's
usage errors exit 2). ``TIMM_U1_DEBUG=1`` lets the traceback through instead.
"""
import argparse
import contextlib
import importlib
import os
import sys
from typing import Iterator, List, Optional

from timm_u1_launcher import COMMANDS as _SUMMARIES, top_level_parser

from .messages import CommandLogging
from .options import HelpFormatter, Parser

__all__ = ['main', 'build_parser', 'COMMANDS']

COMMANDS = tuple(_SUMMARIES)

# errors whose message is meant for the user: bad input, missing files, no network, a refused resume
_USER_ERRORS = (ValueError, OSError, ImportError, RuntimeError)


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The ``timm-u1`` parser: with ``argv``, only the command it names is built (its imports are a
    command's own cost); without, every command (for tests and documentation)."""
    parser, commands = top_level_parser(Parser)
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, summary in _SUMMARIES.items():
        if chosen in (None, name):
            module = importlib.import_module(f'{__name__}.{name.replace("-", "_")}')
            module.add_parser(commands)
            for leaf in _leaves(commands.choices[name]):
                _finish(leaf, module.__doc__ or '')
        else:
            commands.add_parser(name, help=summary)
    return parser


def _leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parsers that parse a command's options (``memory`` itself has none: ``memory build`` has)."""
    subcommands = getattr(parser, 'commands', None)
    if subcommands is None:
        yield parser
        return
    for child in subcommands.choices.values():
        yield from _leaves(child)


def _finish(parser: argparse.ArgumentParser, module_doc: str) -> None:
    """What every command shares: -v/-q, defaults in the help, and the examples of its module docstring."""
    parser.formatter_class = HelpFormatter
    examples = _examples(module_doc, parser.prog)
    if examples and not parser.epilog:
        parser.epilog = 'examples:\n' + examples
    if parser.get_default('configures_logging'):
        return  # its messages are its own: -v/-q would do nothing
    group = parser.add_argument_group('messages').add_mutually_exclusive_group()
    group.add_argument('-v', '--verbose', action='store_true',
                       help='also debug messages of timm_u1 and info messages of the libraries it uses')
    group.add_argument('-q', '--quiet', action='store_true', help='warnings and errors only, no progress bars')


def _examples(module_doc: str, prog: str) -> str:
    """The command lines of a module docstring (indented by four spaces) that run ``prog`` (or its
    ``accelerate launch -m`` form), with their continuation lines."""
    launch = 'accelerate launch -m timm_u1.cli.' + prog.split()[1] + ' '
    lines, continued = [], False
    for line in module_doc.splitlines():
        text = line.strip()
        if continued or (line.startswith('    ') and text.startswith((prog + ' ', launch))):
            lines.append(('      ' if continued else '  ') + text)
            continued = text.endswith('\\')
    return '\n'.join(lines)


def one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line messages, such as lists of corrupt files, joined)."""
    text = ' '.join(line.strip() for line in str(error).splitlines() if line.strip())
    return text or type(error).__name__


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, 'func', None):
        parser.print_help(sys.stderr)
        return 2
    command = f'timm-u1 {args.command}'
    if getattr(args, 'configures_logging', False):  # e.g. timm's train.py: it sets up logging itself
        messages = contextlib.nullcontext()
    else:
        messages = CommandLogging(verbose=args.verbose, quiet=args.quiet)
        if args.quiet and hasattr(args, 'no_progress'):
            args.no_progress = True
    try:
        with messages:
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
    finally:
        if os.environ.get('WORLD_SIZE', '1') != '1':  # one of several processes of accelerate launch
            from ..runs.shard import leave_process_group

            leave_process_group()
