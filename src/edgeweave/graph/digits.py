"""A small CNN for sklearn's 8x8 ``load_digits`` images: the built-in model that every tier can
train and run in seconds, so examples and tests exercise real splits without large downloads."""

from __future__ import annotations

from torch import nn

#: Input of :class:`DigitsCNN`: one 8x8 grayscale image.
DIGITS_INPUT_SHAPE: tuple[int, ...] = (1, 1, 8, 8)


class DigitsCNN(nn.Sequential):
    """conv(1->16) - relu - conv(16->32) - relu - maxpool2 - flatten - linear(512->64) - relu -
    linear(64->10): ten digit logits from a ``(N, 1, 8, 8)`` batch."""

    input_shape: tuple[int, ...] = DIGITS_INPUT_SHAPE

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )
