import pytest

pytestmark = pytest.mark.integration


def test_tokens_roundtrip(capsys):
    from dspyc.foundations import _tokenizer, show_tokens
    from dspyc.settings import Settings

    ids = show_tokens("Hello, world!", Settings())
    assert _tokenizer(Settings()).decode(ids) == "Hello, world!"
    assert "context window:" in capsys.readouterr().out


def test_sampling_varies_and_greedy_does_not(live_engine):
    from dspyc.foundations import sample

    varied = sample("Name an animal.", temperature=1.2, top_p=1.0, n=6, max_tokens=12)
    greedy = [sample("Name an animal.", temperature=0.0, n=1, max_tokens=12)[0] for _ in range(2)]
    assert len(varied) == 6 and len(set(varied)) > 1
    assert greedy[0] == greedy[1]


def test_smoke_runs_both_paths(live_engine, capsys):
    from dspyc.foundations import smoke

    smoke(max_new_tokens=8)
    out = capsys.readouterr().out
    assert "greedy" in out and "engine (" in out
