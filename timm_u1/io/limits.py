""" Time limits on Hub calls: every timm_u1 call to the Hub ends within a bounded time of the Hub going quiet.

Inside :func:`hub_call` (every download, push, timm ``pretrained=True`` weight fetch and Hub dataset load
of timm_u1 runs in one), each request made through huggingface_hub's shared HTTP client:

* waits at most ``$TIMM_U1_HUB_TIMEOUT`` seconds (default 30) for each step: connecting, each read
  and write of a body, a free connection. This overrides huggingface_hub's own per-call timeouts
  (``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``, and the calls it makes without any);
* ends the whole call when the Hub stays silent that long, or when no connection can be made: no
  retry, no back-off, and every later request of the call fails at once (so a library trying
  several files, as timm does, gives up with the first);
* lets huggingface_hub retry error answers (HTTP 408, 429, 5xx) and dropped connections with its
  back-off for at most the limit after the first one; the next request after that ends the call.

A call that keeps receiving data is never cut: the limit bounds silence, not a slow download.
huggingface_hub raises :class:`~timm_u1.io.errors.HubStopped` (an ``OfflineModeIsEnabled``) inside
its calls, so it neither retries nor waits; it falls back to its cache as when offline.

The limits apply through a client factory (``huggingface_hub.set_client_factory``, its public way to
configure HTTP) whose client keeps huggingface_hub's own request hooks (offline mode, request ids).
Outside :func:`hub_call` that client behaves as huggingface_hub's default one.
"""
import logging
import math
import os
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional
from urllib.parse import urlparse

import httpx2  # huggingface_hub's HTTP library (a declared dependency): its client is what is bounded

from .errors import HubStopped, translate_hub_error

__all__ = ['HUB_TIMEOUT_ENV', 'DEFAULT_HUB_TIMEOUT', 'hub_timeout', 'hub_endpoint', 'hub_call']

_logger = logging.getLogger(__name__)

HUB_TIMEOUT_ENV = 'TIMM_U1_HUB_TIMEOUT'
DEFAULT_HUB_TIMEOUT = 30.0  # seconds of silence from the Hub before a call fails
_RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # what huggingface_hub retries with back-off


def hub_timeout() -> float:
    """Seconds a Hub call may wait on a silent Hub: ``$TIMM_U1_HUB_TIMEOUT``, default 30."""
    value = os.environ.get(HUB_TIMEOUT_ENV, '').strip()
    if not value:
        return DEFAULT_HUB_TIMEOUT
    try:
        timeout = float(value)
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(
            f'{HUB_TIMEOUT_ENV}={value!r}: give a finite number of seconds > 0, e.g. {HUB_TIMEOUT_ENV}=30 '
            f'(or unset it for the default, {DEFAULT_HUB_TIMEOUT:g}).')
    return timeout


def hub_endpoint(endpoint: Optional[str] = None) -> str:
    """The Hub's base URL (``endpoint``, else ``HF_ENDPOINT`` / huggingface_hub's default), checked to be one."""
    from huggingface_hub import constants

    where = constants.ENDPOINT if endpoint is None else endpoint
    url = urlparse(where or '')
    if url.scheme not in ('http', 'https') or not url.netloc:
        source = 'endpoint' if endpoint is not None else 'HF_ENDPOINT'
        raise ValueError(
            f'{source}={where!r} is not a Hub URL: give one such as https://huggingface.co, or unset '
            f'{source} for the public Hub.')
    return where.rstrip('/')


@dataclass
class _Call:
    """What one :func:`hub_call` has seen of the Hub; shared by the worker threads huggingface_hub starts."""
    limit: float
    stopped: Optional[HubStopped] = None
    first_failure: Optional[float] = None
    last_failure: str = ''

    def stop(self, why: str) -> HubStopped:
        self.stopped = self.stopped or HubStopped(why)
        return HubStopped(self.stopped.why)

    def check(self) -> None:
        """Before each request: end the call once it stopped, or once error answers outlived the limit."""
        if self.stopped is not None:
            raise HubStopped(self.stopped.why)
        if self.first_failure is not None and time.monotonic() - self.first_failure >= self.limit:
            raise self.stop(f'kept failing for {self.limit:g} s (last: {self.last_failure})')

    def failed(self, what: str) -> None:
        """An error answer or a dropped connection, which huggingface_hub retries: within the limit only."""
        now = time.monotonic()
        self.last_failure = what
        if self.first_failure is None:
            self.first_failure = now
        elif now - self.first_failure >= self.limit:
            raise self.stop(f'kept failing for {self.limit:g} s (last: {what})')


_calls: List[_Call] = []  # innermost last; a global, not a context variable: huggingface_hub downloads in threads
_calls_lock = threading.Lock()


def _current() -> Optional[_Call]:
    with _calls_lock:
        return _calls[-1] if _calls else None


class _BoundedStream(httpx2.SyncByteStream):
    """A response body whose reads end the call on silence."""

    def __init__(self, inner: httpx2.SyncByteStream, call: _Call):
        self._inner, self._call = inner, call

    def __iter__(self):
        try:
            yield from self._inner
        except httpx2.TimeoutException as e:
            raise self._call.stop(f'stopped sending for {self._call.limit:g} s') from e
        except (httpx2.NetworkError, httpx2.RemoteProtocolError) as e:
            self._call.failed(type(e).__name__)
            raise

    def close(self) -> None:
        self._inner.close()


class _BoundedClient(httpx2.Client):
    """huggingface_hub's client, with the limits of the :func:`hub_call` in progress applied to each request."""

    def send(self, request: httpx2.Request, **kwargs) -> httpx2.Response:
        call = _current()
        if call is None:
            return super().send(request, **kwargs)
        call.check()
        request.extensions['timeout'] = httpx2.Timeout(call.limit).as_dict()
        try:
            response = super().send(request, **kwargs)
        except httpx2.TimeoutException as e:
            raise call.stop(f'did not answer within {call.limit:g} s') from e
        except httpx2.ConnectError as e:
            raise call.stop(f'cannot be connected to ({e})') from e
        except (httpx2.NetworkError, httpx2.RemoteProtocolError) as e:
            call.failed(type(e).__name__)
            raise
        if response.status_code in _RETRIED_STATUSES:
            try:
                call.failed(f'HTTP {response.status_code}')
            except HubStopped:
                response.close()
                raise
        if kwargs.get('stream'):
            response.stream = _BoundedStream(response.stream, call)
        return response


_clients: 'weakref.WeakSet[httpx2.Client]' = weakref.WeakSet()
_install_lock = threading.Lock()
_warned = False


def _install_client_factory() -> None:
    """Make huggingface_hub's shared client a :class:`_BoundedClient` (once per process).

    A factory set later by the user (``set_client_factory``) is respected: its clients are not
    bounded, which is said once in the log.
    """
    global _warned
    from huggingface_hub.utils import get_session, set_client_factory

    with _install_lock:
        session = get_session()
        if session in _clients:
            return
        if _clients or _warned:
            if not _warned:
                _logger.warning(
                    'huggingface_hub uses a client factory set after timm_u1 installed its own: '
                    '%s does not apply to its requests.', HUB_TIMEOUT_ENV)
            _warned = True
            return
        # the client huggingface_hub made, read through httpx's public attributes: its hooks
        # (offline mode, request ids) and redirect policy carry over to the bounded client
        hooks = {name: list(funcs) for name, funcs in session.event_hooks.items()}
        follow = session.follow_redirects

        def factory() -> httpx2.Client:
            client = _BoundedClient(event_hooks=hooks, follow_redirects=follow, timeout=None)
            _clients.add(client)
            return client
        set_client_factory(factory)
        get_session()


@contextmanager
def hub_call(what: str, endpoint: Optional[str] = None) -> Iterator[float]:
    """Run the Hub requests of the block under the limits above; yields the limit in seconds.

    A Hub failure inside the block leaves it as one error naming ``what`` and the endpoint
    (:func:`~timm_u1.io.errors.translate_hub_error`); other errors pass unchanged.
    """
    limit = hub_timeout()
    where = hub_endpoint(endpoint)
    _install_client_factory()
    call = _Call(limit)
    with _calls_lock:
        _calls.append(call)
    try:
        yield limit
    except Exception as e:
        error = translate_hub_error(e, what, where, call.stopped)
        if error is None:
            raise
        raise error from e
    finally:
        with _calls_lock:
            _calls.remove(call)
