"""Every decoder-only architecture of the causal-LM mapping grown in width, alone and with depth.

The same model types as `test_every_decoder.py`. Width growth (`GrowthSpec(width=2)`) either keeps the
function exactly (logits to 1e-5 in fp32, the same generated tokens) and leaves a whole model that saves
and loads back, or raises a ValueError that names the block or setting that stops it and leaves the model
as it was; a silent change of the function fails. `zoo.FAST_MAPPED` runs by default, the rest is marked `zoo`.
"""

import pytest
from zoo import (
    FAST_MAPPED,
    WIDTH_SPECS,
    assert_unchanged,
    build_small,
    causal_lm_types,
    growth_failure,
    skip_unless_built,
    snapshot,
    xfail_refusal,
)

from growth_ops import grow

METHODS = list(WIDTH_SPECS)


def _cases():
    for model_type in causal_lm_types():
        for method in METHODS:
            marks = () if model_type in FAST_MAPPED else (pytest.mark.zoo,)
            yield pytest.param(model_type, method, marks=marks, id=f"{model_type}-{method}")


@pytest.mark.parametrize("model_type, method", list(_cases()))
def test_decoder_of_the_mapping_grows_in_width_exactly_or_says_why_not(model_type, method, tmp_path):
    skip_unless_built(model_type)
    try:
        failure = growth_failure(model_type, method, tmp_path)
    except ValueError as error:
        model = build_small(model_type)
        before = snapshot(model)
        with pytest.raises(ValueError):
            grow(model, WIDTH_SPECS[method])
        assert_unchanged(model, before)
        xfail_refusal(model_type, method, error)
    assert failure is None, f"{model_type} {method}: {failure}"
