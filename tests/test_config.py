from pathlib import Path

import pytest

from kdbench.config import SuiteError, load_suite, parse_suite

from .conftest import DELETE, ROOT, tiny_raw


@pytest.mark.parametrize("path", sorted((ROOT / "leaderboards").glob("*.toml")), ids=str)
def test_every_shipped_suite_loads_and_names_its_command(path: Path) -> None:
    suite = load_suite(path)
    assert len(suite.students) >= 1
    assert path.read_text().startswith(f"# Run with: kdbench run leaderboards/{path.name}")


def test_tiny_suite_is_typed() -> None:
    suite = load_suite(ROOT / "leaderboards" / "tiny.toml")
    assert suite.teacher.arch["hidden_size"] == 128
    assert suite.budget.steps > 0 and isinstance(suite.budget.lr, float)
    assert suite.eval.tasks == ("kd_add2", "kd_noisy_compare")
    assert suite.method_config["kd"]["temperature"] == 2.0
    assert len(suite.hash) == 16


def test_hash_ignores_path_and_comments(write_suite) -> None:
    a_path = write_suite(name="a.toml")
    a_path.write_text("# a comment\n" + a_path.read_text())
    a = load_suite(a_path)
    b = load_suite(ROOT / "leaderboards" / "tiny.toml")
    assert a.hash == b.hash
    c = load_suite(write_suite({"budget.steps": 301}, name="c.toml"))
    assert c.hash != b.hash


def test_one_identity_for_the_hash_and_the_track_labels(write_suite) -> None:
    """Name and resources are not part of a suite's identity (same hash: same leaderboard);
    every identity section is, and the open track's labels name exactly the one that differs."""
    import json

    from kdbench.config import IDENTITY
    from kdbench.leaderboard import differences_label

    tiny = load_suite(ROOT / "leaderboards" / "tiny.toml")
    same = load_suite(
        write_suite({"name": "renamed", "resources.cpus_per_job": 2, "resources.zero_stage": 1})
    )
    assert same.hash == tiny.hash
    edits = {
        "cache": {"cache.topk": 8},
        "method_config": {"method_config.kd.alpha": 0.25},
        "deepspeed": {"deepspeed": {"gradient_clipping": 0.5}},
        "budget": {"budget.steps": 201},
        "eval": {"eval.limit": 10},
        "seeds": {"seeds": [0, 1]},
    }
    for section, edit in edits.items():
        other = load_suite(write_suite(edit, name=f"{section}.toml"))
        assert other.hash != tiny.hash, section
        label = differences_label(json.dumps(tiny.to_dict()), json.dumps(other.to_dict()))
        assert label == section
        assert section in IDENTITY


@pytest.mark.parametrize(
    "edits, field, words",
    [
        ({"budget.steps": -5}, "budget.steps", ">= 1"),
        ({"budget.steps": "many"}, "budget.steps", "an integer"),
        ({"budget.lr": True}, "budget.lr", "a number"),
        ({"seeds": []}, "seeds", "non-empty"),
        ({"data.tasks": ["additon"]}, "data.tasks", "did you mean 'addition'"),
        ({"budgte": {"steps": 1}}, "budgte", "did you mean 'budget'"),
        ({"students[0].arch.num_heads": 5}, "students[0].arch.num_heads", "divide"),
        ({"resources.cpus_per_job": 0}, "resources.cpus_per_job", ">="),
        ({"data.add_eos": "yes"}, "data.add_eos", "true or false"),
        ({"data.truncation": "left"}, "data.truncation", "right, drop"),
        ({"generation.stop": "\n"}, "generation.stop", "list of non-empty strings"),
        ({"generation.stop": [""]}, "generation.stop", "list of non-empty strings"),
        ({"generation.max_new_tokens": -1}, "generation.max_new_tokens", ">= 0"),
        ({"generation.top_p": 1.5}, "generation.top_p", "(0, 1]"),
        (
            {"generation.do_sample": True, "generation.temperature": 0},
            "generation.temperature",
            "> 0 with do_sample",
        ),
        ({"generation.beams": 4}, "generation.beams", "unknown field"),
    ],
)
def test_bad_input_names_file_and_field(write_suite, edits, field, words) -> None:
    path = write_suite(edits)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert err.value.field == field
    msg = str(err.value)
    assert msg.startswith(f"{path}: {field}: ") and words in msg and "\n" not in msg


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no such file"):
        load_suite(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(bad)


def test_model_needs_source_or_arch(write_suite) -> None:
    path = write_suite({"students[0]": {"name": "x"}})
    with pytest.raises(SuiteError, match=r"students\[0\]\.source: give exactly one"):
        load_suite(path)


def test_eval_fields_and_per_task_options(write_suite, tmp_path) -> None:
    (tmp_path / "tasks").mkdir()
    suite = load_suite(
        write_suite(
            {
                "eval.tasks": ["gsm8k", "kd_compare"],
                "eval.include": ["tasks"],
                "eval.num_fewshot": 3,
                "eval.chat_template": True,
                "eval.contamination": "error",
                "eval.options": {"gsm8k": {"num_fewshot": 5, "filter": "strict-match"}},
            }
        )
    )
    e = suite.eval
    assert (e.include, e.include_dirs) == (("tasks",), [str(tmp_path / "tasks")])
    assert e.contamination == "error"
    gsm = e.task_options("gsm8k")
    assert (gsm.num_fewshot, gsm.filter, gsm.metric, gsm.chat_template) == (
        5,
        "strict-match",
        None,
        True,
    )
    assert e.task_options("kd_compare").num_fewshot == 3


def test_eval_defaults_keep_the_hash_and_new_fields_enter_it(write_suite, tmp_path) -> None:
    tiny = load_suite(ROOT / "leaderboards" / "tiny.toml")
    # the eval section of the identity is what it was before the [eval] fields of issue 10
    # (the tiny suite's hash was 1e5e7dbf9f6c37e3 then)
    assert tiny.identity()["eval"] == {
        "tasks": ("kd_add2", "kd_noisy_compare"),
        "limit": None,
        "batch_size": 64,
        "quantize": ("int8",),  # a field added since: in the identity when not its default
    }
    (tmp_path / "tasks").mkdir()
    same = load_suite(write_suite({"eval.contamination": "off"}))
    assert same.hash == tiny.hash  # the check changes no result
    # no quantisation, written out, is the default: the same suite as leaving it out
    plain = load_suite(write_suite({"eval.quantize": DELETE}, name="plain.toml"))
    assert load_suite(write_suite({"eval.quantize": []}, name="q.toml")).hash == plain.hash
    assert "quantize" not in plain.identity()["eval"] and plain.hash != tiny.hash
    for edit in (
        {"eval.quantize": ["int4"]},
        {"eval.num_fewshot": 1},
        {"eval.chat_template": True},
        {"eval.include": ["tasks"]},
        {"eval.options": {"kd_noisy_compare": {"limit": 3}}},
    ):
        assert load_suite(write_suite(edit, name="other.toml")).hash != tiny.hash, edit


def test_eval_quantize_lists_schemes_in_order(write_suite) -> None:
    assert load_suite(write_suite({"eval.quantize": DELETE})).eval.quantize == ()
    assert load_suite(write_suite()).eval.quantize == ("int8",)  # the tiny suite's
    suite = load_suite(write_suite({"eval.quantize": ["int4", "int8"]}))
    assert suite.eval.quantize == ("int4", "int8")
    assert suite.identity()["eval"]["quantize"] == ("int4", "int8")


@pytest.mark.parametrize(
    ("edit", "field", "says"),
    [
        ({"eval.options": {"gsm8k": {"limit": 3}}}, "eval.options.gsm8k", "not in eval.tasks"),
        (
            {"eval.options": {"kd_noisy_compare": {"shots": 3}}},
            "eval.options.kd_noisy_compare.shots",
            "unknown",
        ),
        (
            {"eval.options": {"kd_noisy_compare": {"gen_kwargs": 3}}},
            "eval.options.kd_noisy_compare.gen_kwargs",
            "table",
        ),
        ({"eval.include": ["nowhere"]}, "eval.include", "not a folder"),
        ({"eval.contamination": "loud"}, "eval.contamination", "warn, error, off"),
        ({"eval.tasks": []}, "eval.tasks", "non-empty"),
        ({"eval.tasks": ["a", "a"]}, "eval.tasks", "repeat"),
        ({"eval.num_fewshot": -1}, "eval.num_fewshot", ">= 0"),
    ],
)
def test_eval_field_errors(write_suite, edit, field, says) -> None:
    with pytest.raises(SuiteError) as err:
        load_suite(write_suite(edit))
    assert err.value.field == field and says in err.value.message


@pytest.mark.parametrize(
    "edits, field, words",
    [
        ({"students[0].dtype": "fp8"}, "students[0].dtype", "auto, float32, bfloat16, float16"),
        ({"teacher.dtype": "half"}, "teacher.dtype", "one of auto"),
        ({"students[0].from_teacher_layers": [0, 1]}, "students[0].source", "exactly one"),
        (
            {"students[0].from_teacher_layers": [2, 1]},
            "students[0].from_teacher_layers",
            "increasing",
        ),
        ({"teacher.from_teacher_layers": [0]}, "teacher.from_teacher_layers", "unknown field"),
        ({"students[0].lora": {"rank": 4}}, "students[0].lora.rank", "allowed: alpha, dropout, r"),
        ({"students[0].lora": {"dropout": 1.5}}, "students[0].lora.dropout", "[0, 1)"),
        (
            {"students[0].lora": {"target_modules": []}},
            "students[0].lora.target_modules",
            "non-empty",
        ),
        (
            {"students[0].gradient_checkpointing": 1},
            "students[0].gradient_checkpointing",
            "true or false",
        ),
        ({"resources.zero_stage": 4}, "resources.zero_stage", "0, 1, 2 or 3"),
        (
            {"students[0].tokenizer": "bpe"},
            "students[0].tokenizer",
            "built-in tokenizer (char, chunk)",
        ),
        ({"students[0].tokenizer": 3}, "students[0].tokenizer", "string"),
        (
            {"students[0]": {"name": "s", "source": "org/model", "tokenizer": "chunk"}},
            "students[0].tokenizer",
            "only a student built from `arch`",
        ),
        ({"students[0].methods": []}, "students[0].methods", "non-empty list"),
        ({"students[0].methods": ["sft", "sft"]}, "students[0].methods", "must not repeat"),
        ({"students[0].methods": ["gold"]}, "students[0].methods", "gold not in the suite's"),
    ],
)
def test_bad_model_fields_name_file_and_field(write_suite, edits, field, words) -> None:
    path = write_suite(edits)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert err.value.field == field
    assert words in str(err.value) and "\n" not in str(err.value)


def test_model_fields_are_typed(write_suite) -> None:
    from kdbench.config import LoraSpec

    suite = load_suite(
        write_suite(
            {
                "teacher.dtype": "bfloat16",
                "students[0]": {"name": "copy", "from_teacher_layers": [0, 2], "dtype": "float16"},
                "students[1].gradient_checkpointing": True,
                "students[1].lora": {"r": 8, "target_modules": ["q_proj"]},
                "resources.zero_stage": 3,
            }
        )
    )
    copy, other = suite.students
    assert suite.teacher.dtype == "bfloat16" and copy.dtype == "float16"
    assert copy.from_teacher_layers == (0, 2) and copy.source is None and copy.arch is None
    assert other.gradient_checkpointing and other.dtype == "auto"
    assert other.lora == LoraSpec(r=8, alpha=32.0, dropout=0.05, target_modules=("q_proj",))
    assert suite.resources.zero_stage == 3
    with pytest.raises(SuiteError, match="layer 4 is out of range: the teacher has 4 layers"):
        load_suite(write_suite({"students[0]": {"name": "c", "from_teacher_layers": [4]}}))


def test_student_tokenizer_and_methods_are_typed_and_keep_old_hashes(write_suite, tmp_path) -> None:
    from kdbench.tokenizer import chunk_tokenizer

    plain = load_suite(write_suite())
    assert all(s.tokenizer is None and s.methods is None for s in plain.students)
    chunk_tokenizer().save_pretrained(tmp_path / "tok")
    suite = load_suite(
        write_suite(
            {
                "students[0].tokenizer": "chunk",
                "students[1].tokenizer": "tok",
                "students[1].methods": ["sft", "kd"],
            }
        )
    )
    first, second = suite.students
    assert first.tokenizer == "chunk" and first.methods is None
    assert second.tokenizer == str(tmp_path / "tok") and second.methods == ("sft", "kd")
    assert suite.hash != plain.hash
    # at their defaults the new fields stay out of the identity: older suites keep their hash
    from kdbench.config import identity

    students = identity(plain.to_dict())["students"]
    assert all("tokenizer" not in s and "methods" not in s for s in students)


def test_generation_table_is_typed_and_in_the_identity(write_suite) -> None:
    from kdbench.config import GenerationSpec

    tiny = load_suite(ROOT / "leaderboards" / "tiny.toml")
    assert tiny.generation == GenerationSpec() and tiny.generation.stops(tiny.data) == ("\n",)
    path = write_suite(
        {"generation": {"max_new_tokens": 32, "stop": ["\n\n", "###"], "do_sample": True}}
    )
    suite = load_suite(path)
    assert suite.generation == GenerationSpec(32, ("\n\n", "###"), True, 1.0, 1.0)
    assert suite.hash != tiny.hash and suite.identity()["generation"]["max_new_tokens"] == 32
    empty = load_suite(write_suite({"generation.stop": []}, name="e.toml"))
    assert empty.generation.stops(empty.data) == ()  # the EOS token only


def test_a_suite_error_is_always_one_line() -> None:
    from kdbench.config import key_text, one_line

    err = SuiteError("a\nb.toml", "x", "got 'evil\nname\x00'")
    assert "\n" not in str(err) and "\x00" not in str(err)
    assert str(err) == "a\\nb.toml: x: got 'evil\\nname\\x00'"
    assert one_line("plain") == "plain" and key_text("k") == "k" and key_text("a\nb") == "'a\\nb'"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("student-0.1M", True),
        ("Qwen2.5 0.5B instruct", True),
        ("", False),
        ("a/b", False),
        ("a\\b", False),
        (".hidden", False),
        (" padded", False),
        ("new\nline", False),
        ("nul\x00", False),
        ("x" * 65, False),
    ],
)
def test_names_are_safe_for_paths_and_display(value: str, ok: bool) -> None:
    from kdbench.config import check_name

    if ok:
        assert check_name(Path("s.toml"), "name", value) == value
    else:
        with pytest.raises(SuiteError) as err:
            check_name(Path("s.toml"), "name", value)
        assert err.value.field == "name" and "\n" not in str(err.value)


def test_model_sources_are_a_folder_with_config_or_a_hub_id(tmp_path: Path) -> None:
    from kdbench.config import check_source

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for good in (str(model), "Qwen/Qwen2.5-0.5B-Instruct", "openai-community/gpt2"):
        assert check_source(Path("s.toml"), "teacher.source", good) == good
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    for bad, words in (
        (str(tmp_path / "missing"), "no such folder"),
        (str(tmp_path / "file"), "is a file"),
        (str(tmp_path / "empty"), "without config.json"),
        ("", "owner/name"),
        ("gpt2", "owner/name"),  # a Hub id without its owner: give owner/name
        ("bad id!/x", "owner/name"),
        ("./relative/missing", "no such folder"),
    ):
        with pytest.raises(SuiteError, match=words):
            check_source(Path("s.toml"), "teacher.source", bad)


def test_resources_are_checked_against_the_nodes() -> None:
    from kdbench.preflight import check_resources

    def suite(**res):
        raw = tiny_raw()
        raw["resources"].update(res)
        return parse_suite(raw, "s.toml")

    nodes = [{"CPU": 4.0, "memory": 1e9}, {"CPU": 16.0, "GPU": 2.0}]
    check_resources(suite(cpus_per_job=16, gpus_per_job=2), nodes)
    check_resources(suite(cpus_per_job=4, workers_per_job=4), nodes)  # per worker
    for res, field, words in (
        (
            {"cpus_per_job": 17},
            "resources.cpus_per_job",
            "largest node of the Ray cluster (2 nodes) has 16 CPUs",
        ),
        ({"gpus_per_job": 3}, "resources.gpus_per_job", "has 2 GPUs"),
        ({"cpus_per_job": 8, "gpus_per_job": 0.5, "workers_per_job": 2}, None, None),
    ):
        if field is None:
            check_resources(suite(**res), nodes)
            continue
        with pytest.raises(SuiteError) as err:
            check_resources(suite(**res), nodes)
        assert err.value.field == field and words in str(err.value)
    with pytest.raises(SuiteError, match=r"workers_per_job: is 8 but .* hold 5 workers"):
        check_resources(suite(cpus_per_job=4, workers_per_job=8), nodes)
    autoscaled = [*nodes, {"CPU": 4.0, "count": float("inf")}]
    check_resources(suite(cpus_per_job=4, workers_per_job=64), autoscaled)
    with pytest.raises(SuiteError, match="has no GPU"):
        check_resources(suite(gpus_per_job=1), [{"CPU": 8.0}])
    with pytest.raises(SuiteError, match="has both"):
        check_resources(suite(cpus_per_job=8, gpus_per_job=1), [{"CPU": 8.0}, {"CPU": 2, "GPU": 1}])


def test_method_configs_are_typed_against_their_dataclass() -> None:
    from kdbench.methods import MethodError, registry

    methods = registry()
    for name, overrides, field, words in (
        ("kd", {"temperature": "2"}, "method_config.kd.temperature", "a finite number, got '2'"),
        ("kd", {"temperature": float("nan")}, "method_config.kd.temperature", "finite"),
        ("kd", {"alpha": True}, "method_config.kd.alpha", "got True"),
        ("kd", {"alpha": 3.0}, "method_config.kd.alpha", "alpha must be in [0, 1]"),
        ("kd", {"a\nb": 1}, "method_config.kd.'a\\nb'", "unknown field"),
        ("minilm", {"relations": "qq"}, "method_config.minilm.relations", "a list"),
    ):
        with pytest.raises(MethodError) as err:
            methods[name].make_config(overrides)
        assert err.value.field == field and words in err.value.detail, str(err.value)
        assert "\n" not in err.value.field
    assert methods["kd"].make_config({"temperature": 4}).temperature == 4
    assert methods["fitnets"].make_config({"layers": [[1, 2]]}).layers == ((1, 2),)
