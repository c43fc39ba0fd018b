"""One compute thread per test process (and its subprocesses): the models here are tiny, and on a
busy 2-core machine torch's default threads spend more time contending than computing."""
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')

import torch  # noqa: E402

torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))
