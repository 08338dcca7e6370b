import pytest

from dspyc import registry
from dspyc.errors import DspycError


def test_rag_is_discovered():
    assert "rag" in registry.available()
    spec = registry.get("rag")
    assert spec.name == "rag" and spec.dataset == "wiki" and spec.import_path == "programs.rag"


def test_unknown_program_is_a_one_line_error():
    with pytest.raises(DspycError, match="unknown program 'nope'"):
        registry.get("nope")


def test_source_hash_is_stable():
    assert registry.source_hash("rag") == registry.source_hash("rag")


def test_source_hash_follows_the_code_not_its_formatting(tmp_path, monkeypatch):
    """`ruff format` and comments leave a version's source unchanged; a docstring (a prompt) or code does not."""
    from dspyc.settings import Settings

    (tmp_path / "programs").mkdir()
    monkeypatch.setattr(registry, "get_settings", lambda: Settings(project_dir=tmp_path))
    f = tmp_path / "programs" / "p.py"

    def hashed(text: str) -> str:
        f.write_text(text)
        return registry.source_hash("p")

    base = hashed('class A:\n    """Answer briefly."""\n    x = f(1, 2)\n')
    assert (
        hashed('class A:\n    """Answer briefly."""\n\n    # a comment\n    x = f(\n        1,\n        2,\n    )\n')
        == base
    )
    assert hashed('class A:\n    """Answer in one word."""\n    x = f(1, 2)\n') != base
    assert hashed('class A:\n    """Answer briefly."""\n    x = f(1, 3)\n') != base
