"""How a command's messages reach the terminal: the logging of one ``timm-u1`` run, set by -v/-q.

Library code logs through ``logging.getLogger(__name__)``; the command line decides what is shown.
"""
import logging
import sys

__all__ = ['CommandLogging']


class _MessageFormat(logging.Formatter):
    """Info as plain lines; warnings and errors named so (``warning: ...``); -v adds the logger's name."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f'{record.levelname.lower()}: {text}'
        if self.verbose:
            text = f'[{record.name}] {text}'
        return text


class CommandLogging:
    """Logging of one command run: timm_u1's info (progress notes) to stderr by default, warnings only
    with -q, debug and the libraries' info with -v. Undone afterwards, so that in-process calls
    (tests, notebooks) leave the caller's logging as it was."""

    def __init__(self, verbose: bool = False, quiet: bool = False):
        self.ours = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
        self.others = logging.INFO if verbose else logging.WARNING
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(_MessageFormat(verbose))
        self.handler.addFilter(self._shown)

    def _shown(self, record: logging.LogRecord) -> bool:
        return record.levelno >= (self.ours if record.name.startswith('timm_u1') else self.others)

    def __enter__(self) -> 'CommandLogging':
        root, package = logging.getLogger(), logging.getLogger('timm_u1')
        self.saved = root.level, package.level
        root.addHandler(self.handler)
        root.setLevel(min(self.ours, self.others, root.level or logging.WARNING))
        package.setLevel(self.ours)
        return self

    def __exit__(self, *exc) -> None:
        root, package = logging.getLogger(), logging.getLogger('timm_u1')
        root.removeHandler(self.handler)
        root.setLevel(self.saved[0])
        package.setLevel(self.saved[1])
