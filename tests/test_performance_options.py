"""The LightningModules' performance switches: channels-last weights and in-place torch.compile at setup."""

import torch
from test_sdm_module import quiet_trainer, random_batches, tiny_sdm
from torch.utils.data import DataLoader


def test_channels_last_trains_with_channels_last_weights():
    module = tiny_sdm(channels_last=True)
    trainer = quiet_trainer(max_steps=2, enable_checkpointing=False)
    trainer.fit(module, DataLoader(random_batches(2), batch_size=None))
    conv_weights = [p for p in module.net.parameters() if p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_compile_network_compiles_in_place_without_renaming_checkpoint_keys(monkeypatch):
    module = tiny_sdm(compile_network=True)
    keys_before = set(module.state_dict())
    calls = []
    monkeypatch.setattr(module.net, "compile", lambda *args, **kwargs: calls.append(kwargs))
    module.setup("fit")
    assert len(calls) == 1
    assert set(module.state_dict()) == keys_before
