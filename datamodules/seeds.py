"""Seeds derived from integer keys, so that randomness is a pure function of where it is drawn.

Every seeded draw of the project (a training sample's augmentations, a training step, an epoch's shuffling, a test
sample's initial noise, a predict batch) takes its seed from :func:`derived_seed` of the keys that identify it, e.g.
``(seed, epoch, index)``. A name enters as the key ``zlib.crc32(name.encode())``.
"""

import numpy as np

SEED_BITS = 63  # fits every generator's seed: torch (int64), numpy, Python's random
_KEY_LIMIT = 2**64


def derived_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from one or more integer ``keys`` in ``[0, 2**64)`` (``numpy.random.SeedSequence``).

    Key tuples that differ in any key, in order or in length give unrelated seeds.

    Raises:
        ValueError: no key, or a key that is not an integer in range.
    """
    if not keys or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < _KEY_LIMIT
                       for k in keys):
        raise ValueError(f"seed keys must be one or more integers in [0, 2**64), got {keys}")
    # SeedSequence reads its entropy as 32-bit words and pads short input with zeros, so (a, b) and (a, b, 0), or
    # 2**32 and (0, 1), would collide; fixed-width words after the key count keep every key tuple distinct.
    words = [len(keys)] + [word for key in map(int, keys) for word in (key & 0xFFFFFFFF, key >> 32)]
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)
    return int(state[0]) & (2**SEED_BITS - 1)
