"""The formulation guide is rendered from the statements the code solves, so it cannot drift."""
from pathlib import Path

from optprune.formulation_guide import render


def test_formulations_page_is_what_the_code_states():
    page = Path(__file__).resolve().parents[1] / "docs" / "formulations.md"
    assert page.read_text() == render(), "regenerate: python -m optprune.formulation_guide > docs/formulations.md"
