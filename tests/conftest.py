"""Hypothesis profiles: `ci` (derandomised, chosen when CI=true), `dev` (default), `thorough`.

Choose one with HYPOTHESIS_PROFILE=thorough (or `make test-thorough`).
"""

import os

from hypothesis import HealthCheck, settings

# The tests use tiny arrays: one BLAS/OpenMP thread per pytest worker is ~10x faster on a
# shared 2-core machine than threads spinning against each other. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", derandomize=True, max_examples=25, print_blob=True, **_common)
settings.register_profile("dev", max_examples=25, **_common)
settings.register_profile("thorough", max_examples=400, **_common)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev")
)
