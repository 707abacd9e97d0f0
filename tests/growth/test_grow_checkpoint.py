"""Growing a checkpoint on disk (`grow_checkpoint`) must give what `grow_depth` in memory + `save_pretrained` gives."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from zoo import ON_DISK_ARCHITECTURES, SPECS, assert_same_tensors, build, input_ids, logits, read_tensors

import mtlm_hf
from growth_ops import GrowthSpec, grow, grow_checkpoint, grow_depth, plan_checkpoint_growth, plan_depth


def read_config(folder):
    return json.loads((Path(folder) / "config.json").read_text())


def non_weight_files(folder):
    return {p.name for p in Path(folder).iterdir() if not p.name.startswith(("model.safetensors", "model-"))}


def grow_both_ways(arch, method, tmp_path, **disk_kwargs):
    """Save a tiny model, grow it in memory and save it, grow the saved copy on disk: (model, memory dir, disk dir)."""
    model = build(arch)
    model.save_pretrained(tmp_path / "src", max_shard_size="20KB")  # several source shards
    grow(model, SPECS[method])
    model.save_pretrained(tmp_path / "memory")
    grow_checkpoint(tmp_path / "src", tmp_path / "disk", SPECS[method], **disk_kwargs)
    return model, tmp_path / "memory", tmp_path / "disk"


@pytest.mark.parametrize("method", list(SPECS))
@pytest.mark.parametrize("arch", ON_DISK_ARCHITECTURES)
def test_disk_growth_equals_in_memory_growth_tensor_for_tensor(arch, method, tmp_path):
    model, memory, disk = grow_both_ways(arch, method, tmp_path, max_shard_size="30KB")
    assert len(list(disk.glob("model-*.safetensors"))) > 1
    assert_same_tensors(read_tensors(memory), read_tensors(disk))
    # The config as grow_depth leaves it: layer count, layer_types, index lists, sparse step, auto_map.
    assert read_config(disk) == read_config(memory)
    grown_config = AutoConfig.from_pretrained(disk, trust_remote_code=True).to_dict()
    assert grown_config == {**model.config.to_dict(), "_name_or_path": str(disk)}
    assert non_weight_files(disk) == non_weight_files(memory)
    loaded = AutoModelForCausalLM.from_pretrained(disk, attn_implementation="eager", trust_remote_code=True).eval()
    assert loaded.config.num_hidden_layers == model.config.num_hidden_layers
    ids = input_ids()
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), atol=0, rtol=0)


def test_grown_config_keeps_every_per_layer_list_in_step_with_the_plan(tmp_path):
    grow_both_ways("qwen3_moe-sparse-step", "interleave", tmp_path)
    config = read_config(tmp_path / "disk")
    plan = plan_depth(3, new_num_layers=5, method="interleave")
    # Source layers 0 and 2 are dense (step 2 makes layer 0 dense; 2 is listed): their copies stay dense.
    assert config["num_hidden_layers"] == 5
    assert config["decoder_sparse_step"] == 1
    assert config["mlp_only_layers"] == [j for j, s in enumerate(plan.sources) if s in (0, 2)]


def test_disk_growth_keeps_bfloat16_and_writes_an_index_like_save_pretrained(tmp_path):
    model = build("llama", torch.bfloat16)
    model.save_pretrained(tmp_path / "src")
    grow_depth(model, factor=2)
    model.save_pretrained(tmp_path / "memory", max_shard_size="40KB")
    grow_checkpoint(tmp_path / "src", tmp_path / "disk", GrowthSpec(depth=2), max_shard_size="40KB")
    disk = read_tensors(tmp_path / "disk")
    assert {t.dtype for t in disk.values()} == {torch.bfloat16}
    assert_same_tensors(read_tensors(tmp_path / "memory"), disk)
    index = json.loads((tmp_path / "disk" / "model.safetensors.index.json").read_text())
    expected = json.loads((tmp_path / "memory" / "model.safetensors.index.json").read_text())
    assert index["metadata"] == expected["metadata"]
    assert sorted(index["weight_map"]) == sorted(expected["weight_map"])
    for filename in set(index["weight_map"].values()):
        with safe_open(tmp_path / "disk" / filename, "pt") as handle:
            assert handle.metadata() == {"format": "pt"}
            assert {n for n, f in index["weight_map"].items() if f == filename} == set(handle.keys())
        assert os.path.getsize(tmp_path / "disk" / filename) <= 40_000 + 4096  # data + header


def test_tied_head_stored_in_the_source_is_not_written_as_save_pretrained_would_not(tmp_path):
    model = build("gemma3_text")
    assert model.config.tie_word_embeddings
    model.save_pretrained(tmp_path / "src")
    # An older saver kept the tied head as well.
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert "lm_head.weight" in state
    save_file(state, tmp_path / "src" / "model.safetensors", metadata={"format": "pt"})
    growth = grow_checkpoint(tmp_path / "src", tmp_path / "disk", GrowthSpec(depth=2))
    grow_depth(model, factor=2)
    model.save_pretrained(tmp_path / "memory")
    assert growth.dropped == ("lm_head.weight",)
    assert_same_tensors(read_tensors(tmp_path / "memory"), read_tensors(tmp_path / "disk"))


def test_a_ready_plan_gives_the_same_checkpoint_as_its_arguments(tmp_path):
    build("llama").save_pretrained(tmp_path / "src")
    plan = plan_depth(3, method="identity", positions=[0, 2])
    grow_checkpoint(tmp_path / "src", tmp_path / "from_plan", plan=type(plan).from_json(plan.to_json()))
    spec = GrowthSpec(depth_method="identity", positions=(0, 2))
    grow_checkpoint(tmp_path / "src", tmp_path / "from_args", spec)
    assert_same_tensors(read_tensors(tmp_path / "from_args"), read_tensors(tmp_path / "from_plan"))
    with pytest.raises(ValueError, match="either `plan` or the arguments"):
        plan_checkpoint_growth(tmp_path / "src", GrowthSpec(depth=2), plan=plan)


def test_tokenizer_code_and_generation_files_are_copied_and_the_source_card_is_not(tmp_path):
    src = tmp_path / "src"
    build("mtlm-m1").save_pretrained(src)
    tokenizer = mtlm_hf.mistral_tokenizer()
    tokenizer.save_pretrained(src)
    (src / "README.md").write_text("# The 3-layer source model\n")
    growth = grow_checkpoint(src, tmp_path / "disk", GrowthSpec(depth=2))
    copied = {"configuration_mtlm.py", "modeling_mtlm.py", "generation_config.json"}
    copied |= {p.name for p in src.glob("tokenizer*")}
    assert set(growth.copied_files) == copied
    for name in copied:
        assert (tmp_path / "disk" / name).read_bytes() == (src / name).read_bytes(), name
    assert not (tmp_path / "disk" / "README.md").exists()
    grown_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "disk", trust_remote_code=True)
    assert grown_tokenizer("The future of AI is").input_ids == [1, 415, 3437, 302, 16107, 349]


def test_custom_code_checkpoint_grows_where_mtlm_hf_is_absent(tmp_path, run_without_mtlm):
    model = build("mtlm-m1")
    model.save_pretrained(tmp_path / "src")
    grow_depth(model, factor=2)
    ids = input_ids()
    code = f"""
    import json, sys, torch
    from transformers import AutoModelForCausalLM
    from growth_ops import GrowthSpec, grow_checkpoint
    src, dst = {str(tmp_path / "src")!r}, {str(tmp_path / "disk")!r}
    try:
        grow_checkpoint(src, dst, GrowthSpec(depth=2))
        refused = ""
    except ValueError as error:
        refused = str(error)
    grow_checkpoint(src, dst, GrowthSpec(depth=2), trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(dst, trust_remote_code=True, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(torch.tensor({ids.tolist()})).logits
    print(json.dumps({{"refused": refused, "logits": out.tolist(), "module": type(model).__module__,
                      "mtlm_hf_loaded": "mtlm_hf" in sys.modules}}))
    """
    result = run_without_mtlm(code, blocked=("mtlm_hf",))  # growth_ops is what runs there
    assert "pass trust_remote_code=True" in result["refused"]
    assert not result["mtlm_hf_loaded"] and "mtlm_hf" not in result["module"]
    torch.testing.assert_close(torch.tensor(result["logits"]), logits(model, ids), atol=1e-6, rtol=0)
    assert {"configuration_mtlm.py", "modeling_mtlm.py"} <= non_weight_files(tmp_path / "disk")


def no_leftovers(parent, name):
    return [p.name for p in Path(parent).iterdir() if p.name.startswith(f".{name}")] == []


@pytest.mark.parametrize("damage", ["no config", "pickle only", "missing shard", "truncated shard", "wrong index"])
def test_bad_checkpoint_is_refused_with_what_is_wrong_and_nothing_written(damage, tmp_path):
    src = tmp_path / "src"
    build("llama").save_pretrained(src, max_shard_size="20KB")
    shards = sorted(src.glob("model-*.safetensors"))
    if damage == "no config":
        (src / "config.json").unlink()
        error, match = FileNotFoundError, "has no config.json, so it is not a Transformers checkpoint"
    elif damage == "pickle only":
        for path in [*shards, src / "model.safetensors.index.json"]:
            path.unlink()
        (src / "pytorch_model.bin").write_bytes(b"not read")
        error, match = (
            FileNotFoundError,
            r"holds \['pytorch_model.bin'\]\): growth_ops reads safetensors checkpoints only",
        )
    elif damage == "missing shard":
        shards[1].unlink()
        error, match = FileNotFoundError, f"missing from {src}: {shards[1].name}"
    elif damage == "truncated shard":
        os.truncate(shards[-1], os.path.getsize(shards[-1]) - 100)
        error, match = ValueError, f"{shards[-1].name} is not a readable safetensors file .* truncated or damaged"
    else:
        index = json.loads((src / "model.safetensors.index.json").read_text())
        name = next(iter(index["weight_map"]))
        index["weight_map"][name] = shards[-1].name if index["weight_map"][name] != shards[-1].name else shards[0].name
        (src / "model.safetensors.index.json").write_text(json.dumps(index))
        error, match = ValueError, "the index and the shards come from different saves"
    with pytest.raises(error, match=match):
        grow_checkpoint(src, tmp_path / "dst", GrowthSpec(depth=2))
    assert not (tmp_path / "dst").exists()
    assert no_leftovers(tmp_path, "dst")


def test_unknown_architecture_is_refused_with_what_to_do(tmp_path):
    src = tmp_path / "src"
    build("llama").save_pretrained(src)
    config = read_config(src)
    config["model_type"] = "not-a-model"
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match="model_type 'not-a-model', which transformers .* does not know, and no auto_map"
    ):
        grow_checkpoint(src, tmp_path / "dst", GrowthSpec(depth=2))
    assert not (tmp_path / "dst").exists()


def test_config_and_weights_that_disagree_are_refused(tmp_path):
    src = tmp_path / "src"
    build("llama").save_pretrained(src)
    config = read_config(src)
    config["num_hidden_layers"] = 4
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"has 4 layers but its weights hold layers \[0, 1, 2\]"):
        grow_checkpoint(src, tmp_path / "dst", GrowthSpec(depth=2))


def test_existing_destination_is_kept_unless_overwrite_and_then_replaced_whole(tmp_path):
    build("llama").save_pretrained(tmp_path / "src")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        grow_checkpoint(tmp_path / "src", dst, GrowthSpec(depth=2))
    assert (dst / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="is the source checkpoint or inside it"):
        grow_checkpoint(tmp_path / "src", tmp_path / "src", GrowthSpec(depth=2), overwrite=True)
    grow_checkpoint(tmp_path / "src", dst, GrowthSpec(depth=2), overwrite=True)
    assert not (dst / "keep.txt").exists()
    assert read_config(dst)["num_hidden_layers"] == 6
    assert no_leftovers(tmp_path, "dst")


def test_a_plan_that_does_not_fit_writes_nothing(tmp_path):
    build("gpt2").save_pretrained(tmp_path / "src")
    with pytest.raises(ValueError, match="not a whole number of layers"):
        grow_checkpoint(tmp_path / "src", tmp_path / "dst", GrowthSpec(depth=1.5))
    # The checks of apply_plan run on disk too: with scaling by the inverse layer index, inserting an
    # identity copy after layer 0 would change the scaling of the kept layers 1 and 2.
    build("gpt2", scale_attn_by_inverse_layer_idx=True).save_pretrained(tmp_path / "scaled")
    with pytest.raises(ValueError, match="depends on its position"):
        grow_checkpoint(tmp_path / "scaled", tmp_path / "dst", GrowthSpec(depth_method="identity", positions=[0]))
    assert not (tmp_path / "dst").exists()
    assert no_leftovers(tmp_path, "dst")


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="the OS copies through a buffer")
def test_a_source_that_shrinks_while_it_is_copied_leaves_the_destination_as_it_was(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    build("llama").save_pretrained(src, max_shard_size="20KB")
    last = sorted(src.glob("model-*.safetensors"))[-1]
    last_size = os.path.getsize(last)
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    copy_file_range = os.copy_file_range

    def shrink_the_source_first(*args):  # another process rewriting the download as we copy it
        if os.path.getsize(last) == last_size:
            os.truncate(last, last_size - 64)
        return copy_file_range(*args)

    monkeypatch.setattr(os, "copy_file_range", shrink_the_source_first)
    with pytest.raises(ValueError, match=rf"{last.name} ends after \d+ of its \d+ bytes: the file was truncated"):
        grow_checkpoint(src, dst, GrowthSpec(depth=2), overwrite=True)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    assert no_leftovers(tmp_path, "dst")
