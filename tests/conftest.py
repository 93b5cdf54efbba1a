"""Shared pytest set-up: Hypothesis profiles and the path to the real datasets.

Hypothesis profiles (choose with ``HYPOTHESIS_PROFILE=<name>``):

``ci``
    Derandomized (the same examples every run) with a moderate example count. Used when the
    ``CI`` environment variable is set, and by ``.ci/run``.
``dev``
    The default locally: random examples, moderate count.
``thorough``
    Many more examples, for a long local hunt: ``HYPOTHESIS_PROFILE=thorough ./run.sh test``.
"""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from vse_recsys import _sampler

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", derandomize=True, max_examples=40, print_blob=True, **_common)
settings.register_profile("dev", max_examples=40, **_common)
settings.register_profile("thorough", max_examples=1000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

REPO_ROOT = Path(__file__).resolve().parent.parent

# test_boundscheck.py makes out-of-range calls that only the bounds-checked build catches (see
# `./run.sh test-boundscheck`); on a normal build they would write out of bounds
collect_ignore = [] if _sampler.BOUNDSCHECK else ["test_boundscheck.py"]


def shared_data_dir():
    """The real datasets: ``$VSE_RECSYS_DATA``, else ``../shared/data`` beside the repository."""
    configured = os.environ.get("VSE_RECSYS_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir():
    """Path to ``../shared/data``; tests that use it skip (with the reason) when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set VSE_RECSYS_DATA to their folder)")
    return path
