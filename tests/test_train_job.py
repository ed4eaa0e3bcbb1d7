"""The training job with Hugging Face-format models: a teacher and students given by ``source``
(local folders written with ``save_pretrained``) that share one BPE tokenizer train from the
teacher-signal cache; a student with another vocabulary is refused at plan time and in the job."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from kdbench import signal_cache, synthetic
from kdbench.config import SuiteError, parse_suite
from kdbench.models import load_tokenizer, n_params
from kdbench.plan import plan, run_key
from kdbench.records import Job, TrainTask
from kdbench.train_job import train_worker

from .conftest import SHRINK, edit_suite, tiny_raw


def bpe_tokenizer(seed_text: str, vocab: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``seed_text`` (synthetic task text)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(seed_text.splitlines(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def save_model(folder: Path, tokenizer, hidden: int, layers: int) -> Path:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _text(seed: int) -> str:
    return "\n".join(
        ex["prompt"] + synthetic.target_text(ex)
        for ex in synthetic.transfer_set(["addition", "compare"], 200, seed)
    )


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    shared = bpe_tokenizer(_text(0), 400)
    other = bpe_tokenizer(_text(0).replace("+", "plus "), 400)
    return {
        "teacher": save_model(root / "teacher", shared, 32, 2),
        "student": save_model(root / "student", shared, 16, 1),
        "other": save_model(root / "other", other, 16, 1),
    }


def hf_suite(hf_models, tmp_path: Path, student: str = "student", methods=("kd", "fitnets")):
    raw = edit_suite(
        tiny_raw(),
        {
            **SHRINK,
            "teacher": {"name": "hf-teacher", "source": str(hf_models["teacher"])},
            "students": [
                {"name": "hf-student", "source": str(hf_models[student])},
                {
                    "name": "arch-student",
                    "arch": {"hidden_size": 16, "num_layers": 1, "num_heads": 2},
                },
            ],
            "methods": list(methods),
            "data.n_per_task": 16,
            "budget.steps": 2,
        },
    )
    return parse_suite(raw, tmp_path / "hf.toml")


def test_plan_compares_the_real_vocabularies(hf_models, tmp_path: Path) -> None:
    suite = hf_suite(hf_models, tmp_path)
    methods, jobs = plan(suite)  # same tokenizer: accepted; the arch student shares it too
    assert {j.student for j in jobs} == {"hf-student", "arch-student"}
    with pytest.raises(SuiteError, match=r"students\[0\]: kd, fitnets need a vocabulary shared"):
        plan(hf_suite(hf_models, tmp_path, student="other"))
    assert plan(hf_suite(hf_models, tmp_path, student="other", methods=("sft", "seqkd")))[1]


@pytest.mark.parametrize("method", ["kd", "fitnets"])
def test_hf_students_train_from_the_signal_cache(hf_models, tmp_path: Path, method: str) -> None:
    suite = hf_suite(hf_models, tmp_path)
    entry = signal_cache.ensure(
        hf_models["teacher"], suite.data, frozenset({"logits", "hidden_states"}), 16, tmp_path
    )
    assert entry.topk == 16
    _, jobs = plan(suite)
    job = next(j for j in jobs if j.method == method and j.student == "hf-student")
    runs = str(tmp_path / "runs")
    result = train_worker(
        TrainTask(suite, job, str(hf_models["teacher"]), runs, 1.0, None, entry.path)
    )
    assert result.signal_cache and result.teacher_forwards == 0 and result.steps == 2
    # the size axis is the saved weights alone
    saved = Path(result.path)
    assert result.bytes == (saved / "model.safetensors").stat().st_size
    assert not (saved / "checkpoints").exists()


def test_the_job_refuses_another_vocabulary(hf_models, tmp_path: Path) -> None:
    """The job checks again (a plan-time check can be skipped when a tokenizer is not
    readable offline)."""
    suite = hf_suite(hf_models, tmp_path, student="other", methods=("sft",))
    cfg = {"temperature": 2.0, "alpha": 0.5}
    job = Job(run_key(suite, "kd", cfg, "hf-student", 0), "kd", "hf-student", 0, cfg)
    with pytest.raises(ValueError, match="kd needs a vocabulary shared with the teacher"):
        train_worker(TrainTask(suite, job, str(hf_models["teacher"]), str(tmp_path / "runs"), 1.0))


def test_a_teacher_given_by_source_is_not_trained_and_has_its_size(hf_models, tmp_path) -> None:
    from kdbench.teacher import build_teacher

    teacher = build_teacher(hf_suite(hf_models, tmp_path), tmp_path / "cache")
    assert not teacher.trained and not teacher.cached
    assert teacher.bytes == (hf_models["teacher"] / "model.safetensors").stat().st_size


# --- students copied from the teacher's layers, LoRA, gradient checkpointing (hf_world) ------


def world_suite(hf_world, tmp_path: Path, student: dict, methods=("kd",), **edits):
    """A suite over the shared hf_world: its Llama teacher (4 layers) by folder, its JSONL
    transfer set, and one student given by ``student``'s fields."""
    raw = edit_suite(
        tiny_raw(),
        {
            **SHRINK,
            "teacher": {"name": "world-teacher", "source": str(hf_world.teacher)},
            "students": [{"name": "s", **student}],
            "data": {"kind": "jsonl", "path": str(hf_world.transfer), "max_length": 48},
            "methods": list(methods),
            "budget.steps": 3,
            **edits,
        },
    )
    return parse_suite(raw, tmp_path / "world.toml")


def _run_job(suite, hf_world, tmp_path: Path):
    _, jobs = plan(suite)
    task = TrainTask(suite, jobs[0], str(hf_world.teacher), str(tmp_path / "runs"), 1.0)
    return train_worker(task)


def test_a_student_from_teacher_layers_trains(hf_world, tmp_path: Path) -> None:
    from kdbench.models import load_pretrained

    suite = world_suite(hf_world, tmp_path, {"from_teacher_layers": [0, 2]})
    assert suite.students[0].from_teacher_layers == (0, 2)
    result = _run_job(suite, hf_world, tmp_path)  # kd with the teacher live
    student, _ = load_pretrained(result.path)
    teacher, _ = load_pretrained(str(hf_world.teacher))
    assert student.config.num_hidden_layers == 2 and result.params == n_params(student)
    s, t = student.state_dict(), teacher.state_dict()
    moved = [k for k in s if k.startswith("model.layers.1.")]
    assert moved and any(not torch.equal(s[k], t[k.replace(".1.", ".2.", 1)]) for k in moved)
    info = json.loads((Path(result.path) / "kdbench_student.json").read_text())
    assert info["from_teacher_layers"] == [0, 2] and info["trainable_params"] == result.params
    with pytest.raises(SuiteError, match=r"students\[0\]\.from_teacher_layers: layer 4 is out"):
        world_suite(hf_world, tmp_path, {"from_teacher_layers": [0, 4]})


def test_a_lora_student_trains_only_its_adapters(hf_world, tmp_path: Path) -> None:
    from kdbench.models import load_pretrained

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    suite = world_suite(
        hf_world, tmp_path, {"source": str(hf_world.student), "lora": lora}, methods=("sft",)
    )
    result = _run_job(suite, hf_world, tmp_path)
    saved, _ = load_pretrained(result.path)  # a plain model: the adapters are merged
    base, _ = load_pretrained(str(hf_world.student))
    assert type(saved).__name__ == "LlamaForCausalLM" and result.params == n_params(base)
    s, b = saved.state_dict(), base.state_dict()
    assert set(s) == set(b)
    changed = {k for k in s if not torch.equal(s[k], b[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    info = json.loads((Path(result.path) / "kdbench_student.json").read_text())
    assert 0 < info["trainable_params"] < result.params and info["lora"]["r"] == 4


def test_gradient_checkpointing_trains(hf_world, tmp_path: Path) -> None:
    from kdbench.models import load_pretrained

    suite = world_suite(
        hf_world,
        tmp_path,
        {"source": str(hf_world.student), "gradient_checkpointing": True},
        methods=("sft",),
    )
    result = _run_job(suite, hf_world, tmp_path)
    saved, _ = load_pretrained(result.path)
    base, _ = load_pretrained(str(hf_world.student))
    assert math.isfinite(result.final_loss)
    assert not torch.equal(
        saved.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight
    )
    assert saved.config.use_cache


def test_a_zero3_job_saves_a_normal_folder(hf_world, tmp_path: Path) -> None:
    """ZeRO-3 (here through the [deepspeed] table) with a LoRA student: the gathered, merged
    weights are saved as a plain Hugging Face model of the base's shapes."""
    from kdbench.models import load_pretrained

    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    suite = world_suite(
        hf_world,
        tmp_path,
        {"source": str(hf_world.student), "lora": lora},
        methods=("sft",),
        deepspeed={"zero_optimization": {"stage": 3}},
    )
    result = _run_job(suite, hf_world, tmp_path)
    saved, _ = load_pretrained(result.path)
    base, _ = load_pretrained(str(hf_world.student))
    s, b = saved.state_dict(), base.state_dict()
    assert set(s) == set(b) and all(s[k].shape == b[k].shape for k in b)
    changed = {k for k in s if not torch.equal(s[k], b[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)


def test_the_cache_keeps_the_teacher_layers_the_suite_reads(hf_models, tmp_path: Path) -> None:
    from kdbench.teacher import cached_hidden_layers

    suite = hf_suite(
        hf_models, tmp_path
    )  # fitnets, uniform pairs: 1-layer students, 2-layer teacher
    assert cached_hidden_layers(suite, str(hf_models["teacher"])) == (2,)
    raw = edit_suite(tiny_raw(), {**SHRINK, "methods": ["kd"]})
    assert (
        cached_hidden_layers(parse_suite(raw, tmp_path / "t.toml"), str(hf_models["teacher"]))
        is None
    )


def test_cross_tokenizer_methods_train_an_hf_student_with_another_vocabulary(
    hf_models, tmp_path: Path
) -> None:
    """A Hub-format student with its own BPE vocabulary: uld and gold are planned (kd would be
    refused), read the teacher's cached top-k logits on the teacher's rows, or the live teacher,
    and the student is saved with its own tokenizer."""
    suite = hf_suite(hf_models, tmp_path, student="other", methods=("sft", "uld", "gold"))
    _, jobs = plan(suite)
    entry = signal_cache.ensure(
        hf_models["teacher"], suite.data, frozenset({"logits"}), 16, tmp_path
    )
    theirs = load_tokenizer(str(hf_models["other"])).get_vocab()
    runs = str(tmp_path / "runs")
    for method, cache in (("uld", entry.path), ("gold", entry.path), ("gold", None)):
        job = next(j for j in jobs if j.method == method and j.student == "hf-student")
        if cache is None:  # the live teacher: a fresh run folder
            runs = str(tmp_path / "live")
        result = train_worker(
            TrainTask(suite, job, str(hf_models["teacher"]), runs, 1.0, None, cache)
        )
        assert result.steps == 2 and math.isfinite(result.final_loss)
        if cache is None:
            assert not result.signal_cache and result.teacher_forwards > 0
        else:
            assert result.signal_cache and result.teacher_forwards == 0
        assert load_tokenizer(result.path).get_vocab() == theirs
