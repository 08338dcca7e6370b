from dspyc.settings import Settings, find_project_dir


def test_url_setting_selects_url_backend(monkeypatch):
    monkeypatch.setenv("DSPYC_LM_URL", "http://127.0.0.1:9/v1")
    assert Settings().lm_backend == "url"


def test_project_dir_found_from_a_subfolder(tmp_path):
    (tmp_path / "programs").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    assert find_project_dir(tmp_path / "notebooks") == tmp_path


def test_artifacts_dir_override(tmp_path):
    assert Settings(artifacts_root=tmp_path).artifacts_dir == tmp_path


def test_the_configuration_doc_is_generated_from_the_settings():
    """docs/configuration.md is `python -m dspyc.settings_doc`'s output: a setting added, renamed or re-explained
    in dspyc/settings.py shows up here until the doc is regenerated."""
    from pathlib import Path

    from dspyc.settings import Settings
    from dspyc.settings_doc import comments, table

    doc = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert doc.read_text() == table(), "regenerate: python -m dspyc.settings_doc > docs/configuration.md"
    assert all(comments().get(name) for name in Settings.model_fields)  # every setting says what it is for
