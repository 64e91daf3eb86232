"""Splitting the minions of an environment into rolling batches."""

import math
import re

_PERCENT_RE = re.compile(r"^(\d{1,3}(?:\.\d+)?)%$")


class BatchSpecError(ValueError):
    """A batch size that is not a count, a percentage or a list of those."""


def _step_size(step, total):
    """Minions in one batch for one step: a count, or a percentage of `total`.

    Percentages round up, so "50%" of 3 minions is 2 and a batch is never empty.
    """
    if isinstance(step, bool):
        raise BatchSpecError(f"batch size {step!r} is not a count or a percentage")
    if isinstance(step, int):
        if step < 1:
            raise BatchSpecError(f"batch size {step} must be at least 1")
        return step
    if isinstance(step, str):
        if step.isdigit():
            return _step_size(int(step), total)
        match = _PERCENT_RE.fullmatch(step.strip())
        if match:
            share = float(match.group(1))
            if not 0 < share <= 100:
                raise BatchSpecError(f"batch percentage {step!r} must be in (0, 100]")
            return max(1, math.ceil(total * share / 100))
    raise BatchSpecError(f"batch size {step!r} is not a count or a percentage")


def validate_spec(spec):
    """Raise BatchSpecError unless `spec` is a count, a percentage or a non-empty ramp."""
    steps = spec if isinstance(spec, list) else [spec]
    if not steps:
        raise BatchSpecError("a batch ramp needs at least one step")
    for step in steps:
        _step_size(step, 1)
    return spec


def plan_batches(minions, spec):
    """Split `minions` (sorted for a stable plan) into batches following `spec`.

    `spec` is a count (2), a percentage ("50%") or a ramp ([1, "25%", "100%"]):
    each ramp step sizes the next batch and the last step repeats until every
    minion is in a batch.
    """
    validate_spec(spec)
    remaining = sorted(minions)
    steps = spec if isinstance(spec, list) else [spec]
    batches = []
    while remaining:
        step = steps[min(len(batches), len(steps) - 1)]
        size = _step_size(step, len(minions))
        batches.append(remaining[:size])
        remaining = remaining[size:]
    return batches
