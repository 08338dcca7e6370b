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


def _wheel(path, member: str, data: bytes):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path


def test_split_gguf_parts_join_in_order_and_hash(tmp_path):
    import hashlib

    from dspyc.models import GGUFWheel, WheelPart, join_parts, _progress

    chunks = [b"GGUF" + bytes(range(200)), b"x" * 3000, b"tail"]
    parts = tuple(WheelPart(f"pkg-part{i}", "0.9.0", f"pkg_part{i}/data/part{i:02d}.bin") for i in (1, 2, 3))
    wheels = [_wheel(tmp_path / f"p{i}.whl", p.member, c) for i, (p, c) in enumerate(zip(parts, chunks), 1)]
    joined = b"".join(chunks)
    spec = GGUFWheel(
        key="k",
        served_name="k",
        parts=parts,
        filename="m.gguf",
        sha256=hashlib.sha256(joined).hexdigest(),
        size=len(joined),
        context_window=1,
    )
    out = tmp_path / "m.gguf"
    with _progress() as progress:
        assert join_parts(spec, wheels, out, progress) == spec.sha256
    assert out.read_bytes() == joined
    with _progress() as progress, pytest.raises(DspycError, match="holds no"):
        join_parts(spec, list(reversed(wheels)), tmp_path / "bad.gguf", progress)


def test_default_lm_is_qwen_and_the_student_base_is_smollm2():
    from dspyc.models import DEFAULT_LM, QWEN_CODER_05B, STUDENT_BASE

    assert Settings.model_fields["lm_model"].default == DEFAULT_LM == QWEN_CODER_05B.key
    assert STUDENT_BASE == "smollm2-135m-instruct"
    assert [p.member.rsplit("/", 1)[1] for p in QWEN_CODER_05B.parts] == [f"part0{i}.bin" for i in range(1, 7)]
    assert QWEN_CODER_05B.size == 491_400_064


@pytest.mark.integration
def test_pull_qwen_joins_six_wheels_and_converts():
    """Downloads ~480 MB and converts once (cached after): the default program LM, end to end."""
    from dspyc.models import QWEN_CODER_05B, STAMP, pull_lm

    path = pull_lm(QWEN_CODER_05B)
    assert (path / STAMP).exists() and (path / "tokenizer.json").exists()
    assert QWEN_CODER_05B.sha256 in (path / STAMP).read_text()
    assert '"qwen2"' in (path / "config.json").read_text()
