"""docs/reference.md is what the docstrings say today (regenerate with `make docs`)."""

from kdbench.reference import generate

from .conftest import ROOT


def test_reference_is_generated_from_the_current_docstrings() -> None:
    committed = (ROOT / "docs" / "reference.md").read_text()
    assert committed == generate(), "docs/reference.md is stale: run `make docs`"


def test_reference_documents_the_contract_a_contributor_needs() -> None:
    text = generate()
    for needed in (
        "class TeacherSignals",  # the one teacher type, live or cached
        "topk_logits",  # the top-k form
        "entry ``k`` (the last) is the rest bucket",  # where the rest bucket sits
        "temperature is applied to the bucketed distribution",  # how top-k is tempered
        "def distributions(",
        "0 when nothing counts",  # token_ce and masked_mean on an empty batch
        "def logit_loss(",
        "def layer_pairs(",
        "KDBENCH_CACHE",
        "respects_mask",
    ):
        assert needed in text, needed
