"""One compute thread per test process (and its subprocesses): the models here are tiny, and on a
busy 2-core machine torch's default threads spend more time contending than computing."""
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')

import torch  # noqa: E402

torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))


import pytest  # noqa: E402


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running test Hub (tests/hub_server.py) that huggingface_hub, timm's ``hf-hub:`` and timm_u1 use,
    with a fresh cache and ``hub_server.TEST_TOKEN`` as HF_TOKEN."""
    from hub_server import TEST_TOKEN, HubServer, point_at

    with HubServer(tokens=(TEST_TOKEN,)) as server:
        point_at(monkeypatch, server.endpoint, tmp_path / 'hf-cache')
        monkeypatch.setenv('HF_TOKEN', TEST_TOKEN)
        yield server
