"""Seeds: every random function in the adapters accepts the same kinds of ``random_state``."""

import numpy as np


def as_generator(random_state):
    """A ``numpy.random.Generator`` from None, an int, a Generator or a legacy RandomState.

    A Generator is used as is (so the caller's stream advances); a RandomState seeds a new
    Generator from one draw, so a seeded RandomState still gives reproducible results.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**63 - 1, dtype=np.int64))
    if random_state is None or (
        isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool)
    ):
        return np.random.default_rng(random_state)
    raise TypeError(
        f"random_state must be None, an int, a numpy Generator or RandomState, got "
        f"{type(random_state).__name__}"
    )
