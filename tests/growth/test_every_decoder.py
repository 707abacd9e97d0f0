"""Every decoder-only architecture of the installed transformers' causal-LM mapping, grown by every depth method.

Discovered from the mapping, not a hand list; built from the one small config `zoo.SMALL`, or a family's
own small values in `zoo.FAMILY_SMALL`. A family that does not build small (or is refused by the size
guard, `zoo.MAX_PARAMETERS`), or that is not decoder-only, is skipped with the reason (the coverage
table, `benchmarks/growth_coverage.md`, lists them all). `zoo.FAST_MAPPED` grown by stack and identity
runs by default; the rest is marked `zoo` (`make test-zoo`), which `make test` leaves out. Growth on disk
and with optimizer state: `test_every_decoder_on_disk.py`.
"""

import pytest
from zoo import FAST_MAPPED, causal_lm_types, growth_failure, skip_unless_built, xfail_refusal

METHODS = ["stack", "interleave", "identity", "identity-end", "dus"]
FAST_METHODS = ["stack", "identity"]


def _cases():
    for model_type in causal_lm_types():
        for method in METHODS:
            fast = model_type in FAST_MAPPED and method in FAST_METHODS
            marks = () if fast else (pytest.mark.zoo,)
            yield pytest.param(model_type, method, marks=marks, id=f"{model_type}-{method}")


@pytest.mark.parametrize("model_type, method", list(_cases()))
def test_decoder_of_the_mapping_grows_whole(model_type, method):
    skip_unless_built(model_type)
    try:
        failure = growth_failure(model_type, method)
    except ValueError as error:
        xfail_refusal(model_type, method, error)
    assert failure is None, f"{model_type} {method}: {failure}"


def test_mapping_is_discovered_and_holds_the_fast_set():
    types = causal_lm_types()
    assert len(types) > 100
    assert set(FAST_MAPPED) <= set(types)
