from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from datamodules.loaders import DataLoaderSettings


def settings(pin_memory: bool = True, device: str | None = None, **overrides) -> DataLoaderSettings:
    loader = DataLoaderSettings()
    options = {"batch_size": 2, "num_workers": 0, "pin_memory": pin_memory, "persistent_workers": True} | overrides
    loader.init_loader_settings(**options)
    if device is not None:
        loader.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    return loader


def test_memory_is_pinned_only_for_a_gpu_trainer() -> None:
    assert not settings().pin_batches
    assert not settings(device="cpu").pin_batches
    assert settings(device="cuda").pin_batches
    assert not settings(pin_memory=False, device="cuda").pin_batches


def test_persistent_workers_need_workers() -> None:
    assert not settings(num_workers=0).persistent_workers
    assert settings(num_workers=2).persistent_workers


@pytest.mark.parametrize(("key", "value"), [("batch_size", 0), ("num_workers", -1)])
def test_invalid_settings_name_the_key(key: str, value: int) -> None:
    with pytest.raises(ValueError, match=key):
        settings(**{key: value})


def test_evaluation_loader_keeps_order_and_the_last_partial_batch() -> None:
    batches = list(settings(device="cpu").evaluation_loader(TensorDataset(torch.arange(5))))
    assert [batch[0].tolist() for batch in batches] == [[0, 1], [2, 3], [4]]
