"""Hub calls end within a bounded time whatever the Hub does: silent, refusing connections, failing with
HTTP 500, or dropping connections; every way timm_u1 reaches the Hub (its own downloads, timm's
``pretrained=True``, datasets, push) is bounded by ``TIMM_U1_HUB_TIMEOUT``, and says what happened in
one line. No test here waits out a retry back-off: the limit ends them.
"""
import time

import pytest
import torch

import timm
from hub_server import ErrorServer, SilentServer, closed_endpoint, point_at
from timm_u1 import cli, save_pretrained
from timm_u1.data import load_image_dataset
from timm_u1.io import HubUnavailableError
from timm_u1.io.factory import create_model_from_spec
from timm_u1.io.limits import HUB_TIMEOUT_ENV
from timm_u1.memory import AnglePrototypeMemory
from timm_u1.publish import push_path

REPO = 'org/tiny'
LIMIT = 1.0
MARGIN = 4.0  # thread start-up and a loaded 2-core machine; the unbounded paths took 46-787 s


def error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith('timm-u1 ')]
    assert len(lines) == 1 and 'Traceback' not in err and 'internal error' not in lines[0], err
    return lines[0]


def hub_paths(tmp_path):
    """Every way timm_u1 reaches the Hub, each as a call."""
    torch.manual_seed(0)
    folder = save_pretrained(timm.create_model('u1_test_resnet', num_classes=3), tmp_path / 'model')
    return {
        'hf-hub model': lambda: create_model_from_spec(f'hf-hub:{REPO}'),
        "timm's pretrained weights": lambda: create_model_from_spec('resnet10t', pretrained=True),
        'memory': lambda: AnglePrototypeMemory.from_pretrained(REPO),
        'hub dataset': lambda: load_image_dataset('org/ds'),
        'push': lambda: push_path(folder, REPO),
    }


PATHS = ['hf-hub model', "timm's pretrained weights", 'memory', 'hub dataset', 'push']


@pytest.fixture
def limited(monkeypatch, tmp_path):
    monkeypatch.setenv(HUB_TIMEOUT_ENV, str(LIMIT))
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token')

    def at(endpoint: str):
        point_at(monkeypatch, endpoint, tmp_path / 'hf-cache')
        return hub_paths(tmp_path)
    return at


def timed(call, match: str) -> float:
    start = time.monotonic()
    with pytest.raises(HubUnavailableError, match=match):
        call()
    return time.monotonic() - start


@pytest.mark.timeout(120)
@pytest.mark.parametrize('path', PATHS)
def test_a_silent_hub_ends_every_path_within_the_limit(limited, path):
    with SilentServer() as server:
        call = limited(server.endpoint)[path]
        elapsed = timed(call, f'{server.endpoint} did not answer within {LIMIT:g} s')
    assert elapsed < LIMIT + MARGIN, f'{path}: {elapsed:.1f} s'


@pytest.mark.timeout(120)
@pytest.mark.parametrize('path', PATHS)
def test_an_endpoint_with_nothing_listening_fails_at_once(limited, path):
    endpoint = closed_endpoint()
    elapsed = timed(limited(endpoint)[path], f'{endpoint} cannot be connected to')
    assert elapsed < MARGIN, f'{path}: {elapsed:.1f} s'


@pytest.mark.timeout(120)
@pytest.mark.parametrize('path', PATHS)
def test_a_failing_hub_is_reported_as_its_http_error_within_the_limit(limited, path):
    with ErrorServer(500) as server:
        elapsed = timed(limited(server.endpoint)[path], f'{server.endpoint} .*(HTTP 500|last: HTTP 500)')
    # huggingface_hub's back-off may sleep once more (1 s, then 2 s) before the limit ends the call
    assert elapsed < LIMIT + 2 + MARGIN, f'{path}: {elapsed:.1f} s'


@pytest.mark.timeout(120)
def test_a_download_that_stalls_mid_file_ends_within_the_limit(hub, monkeypatch):
    """The headers came, then half the weights, then nothing: the body's reads are bounded too."""
    from timm_u1.publish import push_to_hub

    torch.manual_seed(0)
    push_to_hub(timm.create_model('u1_test_resnet', num_classes=3), REPO)
    monkeypatch.setenv(HUB_TIMEOUT_ENV, str(LIMIT))
    hub.fail[('GET', 'resolve')] = 'stall'
    elapsed = timed(lambda: create_model_from_spec(f'hf-hub:{REPO}'),
                    f'{hub.endpoint} (stopped sending for|did not answer within) 1 s')
    assert elapsed < LIMIT + MARGIN


@pytest.mark.parametrize('value', ['inf', 'nan', '0', '-1', 'soon'])
def test_a_bad_hub_timeout_is_a_one_line_error_naming_the_variable(monkeypatch, tmp_path, capsys, value):
    monkeypatch.setenv(HUB_TIMEOUT_ENV, value)
    assert cli.main(['analyze', '--model', f'hf-hub:{REPO}', '--data', 'digits', '--output', str(tmp_path / 'a')]) == 1
    line = error_line(capsys.readouterr().err)
    assert f'{HUB_TIMEOUT_ENV}={value!r}' in line and 'seconds > 0' in line


def test_an_empty_hf_endpoint_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    point_at(monkeypatch, '', tmp_path / 'hf-cache')
    assert cli.main(['analyze', '--model', f'hf-hub:{REPO}', '--data', 'digits', '--output', str(tmp_path / 'a')]) == 1
    assert "HF_ENDPOINT='' is not a Hub URL" in error_line(capsys.readouterr().err)


def test_a_hub_that_recovers_within_the_limit_is_retried(hub, monkeypatch):
    """An error answer is retried with huggingface_hub's back-off (its git-LFS batch call, in every 2.x), not
    fatal: the limit bounds failing, not failure."""
    from timm_u1.publish import push_to_hub

    monkeypatch.setenv(HUB_TIMEOUT_ENV, '30')
    torch.manual_seed(0)
    hub.fail[('POST', 'lfs-batch')], hub.fail_times[('POST', 'lfs-batch')] = 503, 1
    push_to_hub(timm.create_model('u1_test_resnet', num_classes=3), REPO)
    assert ('POST', 'lfs-batch') not in hub.fail and hub.calls('lfs-batch') == 2
    assert create_model_from_spec(f'hf-hub:{REPO}').num_classes == 3


@pytest.mark.timeout(600)
def test_the_limits_benchmark_runs_at_its_smallest_setting():
    """scripts/bench_hub_limits.py (docs/reliability.md's numbers), one state and one path."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / 'scripts' / 'bench_hub_limits.py'
    done = subprocess.run([sys.executable, str(script), '--limit', '0.5', '--states', 'refused', '--paths', 'model'],
                          capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert done.returncode == 0, done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith('refused ')]
    assert row.split()[1] == 'model' and 'HubUnavailableError: cannot download org/tiny' in row
    assert 'cannot be connected to' in row and float(row.split()[2]) < 0.5 + MARGIN


def test_a_body_that_stops_coming_ends_the_call_naming_it(hub, monkeypatch):
    """A streamed answer whose body stalls after the headers: the read is bounded, the message says so."""
    from huggingface_hub.utils import get_session

    from timm_u1.io.limits import hub_call

    monkeypatch.setenv(HUB_TIMEOUT_ENV, str(LIMIT))
    hub.fail[('GET', 'info')] = 'stall'
    start = time.monotonic()
    with pytest.raises(HubUnavailableError, match=f'{hub.endpoint} stopped sending for 1 s'):
        with hub_call('reading'):
            with get_session().stream('GET', f'{hub.endpoint}/api/models/{REPO}') as response:
                b''.join(response.iter_bytes())
    assert time.monotonic() - start < LIMIT + MARGIN
