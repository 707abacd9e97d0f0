"""`GrowthCallback` under `transformers.Trainer` on 2 CPU processes, with DDP and with FSDP2.

tests/scripts/trainer_growth.py trains a tiny MTLM for 6 optimizer steps with `growth.train(trainer)`,
growing it 2 -> 4 layers at step 3 (`*-width`: widened x2 first); every rank trains on other examples. Each rank dumps the new layers'
gradients at the first step after growth and every parameter at the end: they are equal across ranks
only if the grown model was wrapped again (the gradients all-reduced, or reduce-scattered under FSDP).
"""

import math

import pytest
import torch
from safetensors.torch import load_file
from scripts._launch import ROOT, accelerate_launch, assert_ranks_agree_and_new_layers_trained, entries, launch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["ddp", "fsdp", "ddp-width", "fsdp-width"])
def ranks(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"trainer_growth_{request.param}")
    command = accelerate_launch(2, fsdp=request.param.startswith("fsdp"))
    spec = ["--spec", "width"] if request.param.endswith("width") else []
    launch(command, ROOT / "tests/scripts/trainer_growth.py", str(out), *spec, home=out / "hf_home")
    return request.param, [load_file(out / f"rank{r}.safetensors") for r in range(2)]


def test_trainer_grew_and_the_losses_continue(ranks):
    engine, dumps = ranks
    assert [int(d["num_layers"]) for d in dumps] == [4, 4]
    assert [int(d["hidden_size"]) for d in dumps] == [64 if engine.endswith("width") else 32] * 2
    assert [bool(d["sharded"]) for d in dumps] == [engine.startswith("fsdp")] * 2
    losses = dumps[0]["losses"].tolist()
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)  # one logged loss per optimizer step


def test_new_layers_gradients_are_synchronised_across_ranks(ranks):
    _, dumps = ranks
    grads = [entries(d, "grad") for d in dumps]
    assert len(grads[0]) == 2 * 9 and set(grads[0]) == set(grads[1])  # every parameter of layers 2 and 3
    for name in grads[0]:
        assert grads[0][name].abs().sum() > 0, f"{name} got no gradient"
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=0, msg=name)


def test_parameters_stay_identical_across_ranks_and_the_new_layers_train(ranks):
    assert_ranks_agree_and_new_layers_trained(ranks[1])
