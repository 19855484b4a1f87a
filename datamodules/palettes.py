"""Fixed colour palettes for visualising label maps."""

import torch


def bit_interleaved_palette(num_colors: int) -> torch.Tensor:
    """Return a deterministic ``(num_colors, 3)`` uint8 palette (the PASCAL VOC construction).

    The bits of each index are dealt round-robin to red, green and blue, starting from each channel's most
    significant bit, so neighbouring indices get clearly different colours and index 0 is black.
    """
    if num_colors < 1:
        raise ValueError(f"num_colors must be positive, got {num_colors}")
    palette = torch.zeros(num_colors, 3, dtype=torch.uint8)
    for index in range(num_colors):
        remaining, colour = index, [0, 0, 0]
        bit = 7
        while remaining and bit >= 0:
            for channel in range(3):
                colour[channel] |= ((remaining >> channel) & 1) << bit
            remaining >>= 3
            bit -= 1
        palette[index] = torch.tensor(colour, dtype=torch.uint8)
    return palette
