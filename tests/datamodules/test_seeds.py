import numpy as np
import pytest
import torch

from datamodules.seeds import derived_seed


def test_a_seed_is_a_deterministic_63_bit_function_of_its_keys():
    seeds = {derived_seed(seed, epoch, index) for seed in range(3) for epoch in range(3) for index in range(50)}
    assert len(seeds) == 3 * 3 * 50
    assert all(0 <= seed < 2**63 for seed in seeds)
    assert derived_seed(7, 1, 2) == derived_seed(np.int64(7), 1, 2)
    torch.Generator().manual_seed(max(seeds))  # every generator takes it


@pytest.mark.parametrize(
    "keys, other",
    [
        ((5, 3), (5, 3, 0)),  # a trailing zero key
        ((2**32,), (0, 1)),  # a key wider than 32 bits against two small ones
        ((1, 2), (2, 1)),  # order
        ((2**64 - 1,), (2**32 - 1, 2**32 - 1)),
    ],
)
def test_key_tuples_that_numpy_would_merge_stay_distinct(keys, other):
    assert derived_seed(*keys) != derived_seed(*other)


@pytest.mark.parametrize("keys", [(), (-1,), (2**64,), (1.0,), (True,), ("3",)])
def test_keys_outside_the_integers_it_takes_are_refused(keys):
    with pytest.raises(ValueError, match="seed keys"):
        derived_seed(*keys)
