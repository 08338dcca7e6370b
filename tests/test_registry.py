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
