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
    """Training produced a non-finite loss or parameter at ``step``; ``parameter`` names
    the first non-finite parameter (None if every parameter is still finite)."""

    def __init__(self, step: int, loss: float, parameter: str | None = None) -> None:
        self.step = step
        self.loss = loss
        self.parameter = parameter
        what = f"non-finite parameter {parameter!r}" if parameter else f"non-finite loss ({loss})"
        super().__init__(f"training diverged: {what} at step {step}; the learning rate (lr) is the likely "
                         "cause: lower it (or alpha / init_scale)")
