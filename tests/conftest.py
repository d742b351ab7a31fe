"""Shared fixtures: small seeded models, no network."""

import os

import pytest
import torch
import torchvision
from torch import nn

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The xdist workers (-n auto: one per core) already fill the cores; torch's default of a thread per core
    # in every worker oversubscribes them, which made a 24 s test take 248 s in the suite. One thread per
    # worker, also for the processes a test starts (notebook kernels, torchrun, the command line).
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


class ConvPoolLinear(nn.Module):
    """conv -> ReLU -> global average pool -> linear: the architecture CAM was defined on."""

    def __init__(self, classes: int = 4, channels: int = 6):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def cam_net():
    torch.manual_seed(0)
    return ConvPoolLinear().eval()


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.randn(2, 3, 96, 96)
