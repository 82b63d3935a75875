"""Every random state is derived from the run seed and the task's coordinates, never drawn in sequence,
so results do not depend on the order of execution or the number of workers."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """Independent random streams of one run."""

    OUTER_SPLIT = 0
    INNER_SPLIT = 1
    SAMPLER = 2
    PERMUTATION = 3
    WEIGHT_PERMUTATION = 4
    META_SPLIT = 5  # the stacking meta-learner's folds
    LEARNING_CURVE = 6  # the learning curve's subsamples and their nested CVs
    PLANNING = 7  # the sample-size simulations
    HETEROGENEITY = 8  # the subgroup heterogeneity tests' parametric bootstrap


def derive_seed(seed: int, stream: Stream, *keys: int) -> int:
    """A 32-bit seed for ``(seed, stream, *keys)`` via NumPy's SeedSequence (well-mixed, collision-free)."""
    entropy = [int(seed), int(stream), *(int(k) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])
