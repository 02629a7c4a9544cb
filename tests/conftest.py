import pytest
import torch


@pytest.fixture
def gen():
    """A fresh seeded generator (tests never seed global state)."""
    return torch.Generator().manual_seed(1234)
