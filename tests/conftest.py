"""Shared test setup. Unit tests use tiny configs: one intra-op thread per test process is faster
(no thread-pool overhead on small ops) and more reproducible; `make test` runs two processes with
pytest-xdist to use both cores of the CI machine."""

import torch

torch.set_num_threads(1)
