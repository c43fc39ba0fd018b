"""Option types that validate a value when it is parsed, with the allowed range in the message.

``--batch-size 0`` fails at once with ``argument --batch-size: must be an integer >= 1, got 0``,
not after a dataset was loaded. Every command builds its options from these.
"""
import argparse
import copy
import math
import sys
from typing import Callable, Optional, Type

__all__ = ['Parser', 'HelpFormatter', 'integer', 'number', 'seed', 'non_empty', 'torch_device', 'deprecated_alias',
           'add_column_options']


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` without prefix matching: ``--outp`` is an error, not ``--output``.

    Abbreviations would let an option given after a study's ``--`` slip past the study's list of
    options it refuses there, and make adding an option a breaking change.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('allow_abbrev', False)
        super().__init__(*args, **kwargs)
        self.commands: Optional[argparse.Action] = None  # the sub-commands' action, once added

    def add_subparsers(self, **kwargs) -> argparse.Action:
        """As argparse's, with sub-command parsers that are :class:`Parser` too, kept as ``self.commands``."""
        kwargs.setdefault('parser_class', Parser)
        self.commands = super().add_subparsers(**kwargs)
        return self.commands


def _bound(value) -> str:
    return str(value) if isinstance(value, int) else f'{value:g}'  # integers exactly: 4294967295, not 4.29497e+09


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_bound(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {_bound(high)}"
    return ''


def integer(low: Optional[int] = None, high: Optional[int] = None) -> Callable[[str], int]:
    """An integer in [low, high] (either bound may be None)."""
    what = ' '.join(filter(None, ('an integer', _range_text(low, high, False, False))))

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'must be {what}, got {text!r}') from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f'must be {what}, got {value}')
        return value
    parse.__name__ = 'integer'  # argparse names the type in its own messages
    return parse


def number(
        low: Optional[float] = None,
        high: Optional[float] = None,
        low_open: bool = False,
        high_open: bool = False,
) -> Callable[[str], float]:
    """A finite number in the range the bounds give (open at a bound with ``*_open``); NaN and inf refused."""
    what = ' '.join(filter(None, ('a finite number', _range_text(low, high, low_open, high_open))))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'must be {what}, got {text!r}') from None
        bad = not math.isfinite(value)
        bad = bad or (low is not None and (value <= low if low_open else value < low))
        bad = bad or (high is not None and (value >= high if high_open else value > high))
        if bad:
            raise argparse.ArgumentTypeError(f'must be {what}, got {text}')
        return value
    parse.__name__ = 'number'
    return parse


# numpy's legacy and torch's generators both take seeds below 2**32 everywhere
seed = integer(0, 2 ** 32 - 1)
seed.__name__ = 'seed'


def non_empty(text: str) -> str:
    """A non-empty string (model specs, repo ids, paths)."""
    if not text.strip():
        raise argparse.ArgumentTypeError('must not be empty')
    return text


def hub_license(text: str) -> str:
    """A licence id the Hub knows (apache-2.0, mit, cc-by-4.0, ..., other)."""
    from ..io.cards import check_license

    try:
        return check_license(text.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def torch_device(text: str) -> str:
    """A device torch knows by that name (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...); whether it is present is
    checked where it is used."""
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f'{text!r} is not a torch device; e.g. cpu, cuda or cuda:1') from None
    return text


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default in its help (options without help text too), unless it is None or off or the
    help already names it; text with line breaks (the examples) kept as written, paragraphs wrapped.

    argparse's formatters are extended by overriding their methods, as its own subclasses do:
    ``add_argument``, ``_get_help_string`` and ``_fill_text`` are the hooks used here.
    """

    def add_argument(self, action: argparse.Action) -> None:
        if action.help is None and action.option_strings and _shown_default(action):
            action = copy.copy(action)  # the parser's action keeps help=None
            action.help = 'default: %(default)s'
        super().add_argument(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        if not _shown_default(action) or 'default' in (action.help or ''):
            return action.help or ''
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if '\n' in text:
            return ''.join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _shown_default(action: argparse.Action) -> bool:
    return action.default is not None and action.default is not False and action.default is not argparse.SUPPRESS


def deprecated_alias(*old_names: str) -> Type[argparse.Action]:
    """A store action whose old option names still work for one release, each use with a warning.

    ``add_argument('--output', '--out', dest='out', action=deprecated_alias('--out'))``: one name for the
    output folder across commands, ``--out`` kept until timm_u1 0.3.
    """
    class Store(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            if option_string in old_names:
                new = next(s for s in self.option_strings if s not in old_names)
                # parsing happens before the command's logging is set up: the CLI writes this itself
                print(f'{parser.prog}: warning: {option_string} is deprecated, use {new} (the old name goes in '
                      f'timm_u1 0.3)', file=sys.stderr)
            setattr(namespace, self.dest, values)
    return Store


def add_column_options(group) -> None:
    """``--image-column`` and ``--label-column``, for every command that reads a dataset."""
    group.add_argument('--image-column', type=non_empty, default=None,
                       help='column of images (default: the first Image column, or one named image/img/...)')
    group.add_argument('--label-column', type=non_empty, default=None,
                       help='column of class labels, e.g. coarse_label of CIFAR-100 (default: the first '
                            'ClassLabel column, fine_label first, or one named label/labels/target/...)')
