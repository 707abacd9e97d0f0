"""Every decoder-only architecture of the installed transformers' causal-LM mapping, grown by stack and identity.

Discovered from the mapping, not a hand list; built from the one small config `zoo.SMALL`, or a family's
own small values in `zoo.FAMILY_SMALL`. A family that does not build small (or is refused by the size
guard, `zoo.MAX_PARAMETERS`), or that is not decoder-only, is skipped with the reason (the coverage
table, `benchmarks/growth_coverage.md`, lists them all, with interleave and dus too). `zoo.FAST_MAPPED`
runs by default; the rest is marked `zoo` (`make test-zoo`, about 24 minutes on 2 busy cores), which
`make test` leaves out.
"""

import pytest
from zoo import FAST_MAPPED, NotDecoderOnly, build_small, causal_lm_types, growth_failure, input_ids, logits

METHODS = ["stack", "identity"]


def _cases():
    for model_type in causal_lm_types():
        marks = () if model_type in FAST_MAPPED else (pytest.mark.zoo,)
        for method in METHODS:
            yield pytest.param(model_type, method, marks=marks, id=f"{model_type}-{method}")


@pytest.mark.parametrize("model_type, method", list(_cases()))
def test_decoder_of_the_mapping_grows_whole(model_type, method):
    try:
        logits(build_small(model_type), input_ids())
    except NotDecoderOnly as error:
        pytest.skip(f"{model_type}: {error}")
    except Exception as error:  # noqa: BLE001 - a family the small config does not build is listed, not grown
        pytest.skip(f"{model_type} does not build small: {type(error).__name__}: {error}")
    try:
        failure = growth_failure(model_type, method)
    except ValueError as error:
        # A refusal is allowed only with a reason: it names what stops growth.
        assert len(str(error)) > 40, error
        pytest.xfail(f"{model_type} refuses {method}: {error}")
    assert failure is None, f"{model_type} {method}: {failure}"


def test_mapping_is_discovered_and_holds_the_fast_set():
    types = causal_lm_types()
    assert len(types) > 100
    assert set(FAST_MAPPED) <= set(types)
