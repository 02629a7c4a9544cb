"""Exceptions raised by coarsegrad.

Every error caused by bad input is a ``ValueError`` subclass whose message starts
with the field at fault, so API users can catch ``ValueError`` and the CLI can print
one line and exit 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input; ``field`` names the parameter, file or array at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ConfigError(InputError):
    """An invalid parameter or configuration value (for example ``bits=0``)."""


class DataError(InputError):
    """Data that cannot be used: a malformed file, NaN values, mismatched shapes."""


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss; ``step`` is the step at which it happened."""

    def __init__(self, step: int, loss: float) -> None:
        self.step = step
        self.loss = loss
        super().__init__(f"non-finite loss ({loss}) at step {step}; lower the learning rate (lr, --lr)")
