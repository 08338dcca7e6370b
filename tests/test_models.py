import pytest

from dspyc.errors import DspycError
from dspyc.models import KNOWN_LMS, resolve_lm, served_name
from dspyc.settings import Settings


def test_unknown_model_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DspycError, match="unknown model 'no-such-model'"):
        resolve_lm("no-such-model", Settings())


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(DspycError, match="no config.json"):
        resolve_lm(str(tmp_path), Settings())


def test_local_folder_and_served_names(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_lm(str(tmp_path), Settings()) == str(tmp_path.resolve())
    assert served_name("smollm2-135m-instruct") == KNOWN_LMS["smollm2-135m-instruct"].served_name


@pytest.mark.integration
def test_pull_is_idempotent_and_complete():
    from dspyc.models import SMOLLM2, STAMP, pull_lm

    path = pull_lm(SMOLLM2)
    assert (path / STAMP).exists() and (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    assert SMOLLM2.sha256 in (path / STAMP).read_text()
    assert pull_lm(SMOLLM2) == path  # second call: nothing to do
