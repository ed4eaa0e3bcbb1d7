"""Model construction: dtypes, students copied from the teacher's layers (Llama, Qwen2, GPT-2)
and LoRA adapters merged back into a plain model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from kdbench.config import LoraSpec
from kdbench.models import (
    decoder_layers,
    from_teacher_layers,
    load_pretrained,
    merged,
    n_params,
    n_trainable,
    resolve_dtype,
    with_lora,
)


def test_dtypes_are_float32_on_a_cpu() -> None:
    for name in ("auto", "float32", "bfloat16", "float16"):
        assert resolve_dtype(name, "cpu") == torch.float32
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype("int8", "cpu")


@pytest.mark.parametrize(
    "arch, prefix",
    [("teacher", "model.layers"), ("qwen2", "model.layers"), ("gpt2", "transformer.h")],
)
def test_a_student_from_teacher_layers_starts_as_those_layers(hf_world, arch, prefix) -> None:
    teacher, _ = load_pretrained(str(getattr(hf_world, arch)))
    n = len(decoder_layers(teacher))
    keep = [0, n - 1]
    student = from_teacher_layers(teacher, keep)
    assert student.config.num_hidden_layers == 2 and len(decoder_layers(student)) == 2
    t, s = teacher.state_dict(), student.state_dict()
    for j, i in enumerate(keep):
        layer = {
            k[len(f"{prefix}.{i}.") :]: v for k, v in t.items() if k.startswith(f"{prefix}.{i}.")
        }
        assert layer
        for name, value in layer.items():
            assert torch.equal(s[f"{prefix}.{j}.{name}"], value), name
    outside = [k for k in t if not k.startswith(f"{prefix}.")]
    assert outside and all(torch.equal(s[k], t[k]) for k in outside)  # embeddings, norm, head
    # the same function as the teacher when every layer is kept
    ids = torch.tensor([[1, 5, 9, 12]])
    whole = from_teacher_layers(teacher, list(range(n)))
    with torch.no_grad():
        assert torch.allclose(whole(ids).logits, teacher(ids).logits, atol=1e-5)
    with pytest.raises(ValueError, match=f"the teacher has {n} layers"):
        from_teacher_layers(teacher, [0, n])


def test_lora_trains_only_adapters_and_merges_into_a_plain_model(hf_world, tmp_path) -> None:
    base, tok = load_pretrained(str(hf_world.student))
    params = n_params(base)
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = with_lora(base, LoraSpec(r=4, alpha=8, dropout=0.0))
    assert 0 < n_trainable(model) < params
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p)  # as if trained: B is zero at initialisation
    plain = merged(model)
    plain.save_pretrained(tmp_path / "s")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    assert type(again).__name__ == "LlamaForCausalLM" and n_params(again) == params
    state = again.state_dict()
    assert set(state) == set(original)
    changed = {k for k in state if not torch.equal(state[k], original[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    with pytest.raises(ValueError, match="lora.target_modules"):
        with_lora(load_pretrained(str(hf_world.student))[0], LoraSpec(target_modules=("nope",)))
