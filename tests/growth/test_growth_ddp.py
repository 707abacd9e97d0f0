"""A real two-process DDP run on CPU: after `grow_prepared`, the new layers' gradients are all-reduced.

Without re-wrapping, DDP knows only the parameters it was built with: the new layers would train on
each rank's own gradients and the replicas would drift apart. tests/scripts/ddp_growth.py trains,
grows and dumps gradients and parameters per rank; this test compares the ranks.
"""

import pytest
import torch
from safetensors.torch import load_file
from scripts._launch import ROOT, accelerate_launch, assert_ranks_agree_and_new_layers_trained, entries, launch

pytestmark = pytest.mark.slow  # two processes through torchrun: 30-50 s on 2 shared cores


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_growth")
    launch(accelerate_launch(2, fsdp=False), ROOT / "tests/scripts/ddp_growth.py", str(out), home=out / "hf_home")
    return [load_file(out / f"rank{r}.safetensors") for r in range(2)]


def test_ranks_saw_different_data(ranks):
    # The control: were gradients not all-reduced, they would differ between ranks.
    assert not torch.allclose(ranks[0]["losses"], ranks[1]["losses"])
    local = [entries(r, "local") for r in ranks]
    assert local[0] and all(not torch.allclose(local[0][n], local[1][n]) for n in local[0])


def test_new_layers_gradients_are_all_reduced_after_growth(ranks):
    local = [entries(r, "local") for r in ranks]
    synced = [entries(r, "synced") for r in ranks]
    assert int(ranks[0]["num_layers"]) == 4
    assert set(synced[0]) == set(local[0]) and len(synced[0]) == 2 * 9  # every parameter of layers 2 and 3
    for name in synced[0]:
        torch.testing.assert_close(synced[0][name], synced[1][name], rtol=0, atol=0, msg=name)
        # DDP averages the ranks' accumulated gradients.
        torch.testing.assert_close(synced[0][name], (local[0][name] + local[1][name]) / 2, rtol=1e-5, atol=1e-7)


def test_parameters_stay_identical_across_ranks_after_growth(ranks):
    assert_ranks_agree_and_new_layers_trained(ranks)
