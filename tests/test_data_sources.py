"""Calibration and evaluation text on a fresh machine: the shipped copies (checked by sha256), any
list of strings or HF Dataset as calibration, and one line where a source cannot be read."""
import json

import pytest
import torch


@pytest.fixture
def no_data_folder(tmp_path, monkeypatch):
    """A working folder with no shared/data beside it and no $OPTPRUNE_DATA_DIR."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPTPRUNE_DATA_DIR", raising=False)
    return tmp_path


def test_without_a_data_folder_the_shipped_texts_are_used(no_data_folder):
    from optprune import data

    assert data.find_data_dir() is None
    docs = data.corpus_documents("c4")
    assert len(docs) == 1000 and all(isinstance(d, str) and d for d in docs)
    wiki = data.wikitext_test_text()
    assert wiki.startswith("\n\n = Robert Boulter = \n") and len(wiki) == 1294336
    data.check_text_source("c4")
    data.check_text_source("wikitext2", test=True)
    assert "shipped" in data.describe_source("c4")


def test_a_shipped_text_that_does_not_match_its_checksum_is_refused(monkeypatch):
    from optprune import data

    data.shipped_text.cache_clear()
    monkeypatch.setitem(data.SHIPPED_FILES, "c4", (data.SHIPPED_FILES["c4"][0], "0" * 64))
    try:
        with pytest.raises(ValueError, match="does not match its sha256"):
            data.shipped_text("c4")
    finally:
        data.shipped_text.cache_clear()


def test_what_is_not_shipped_needs_the_hub_and_says_so(no_data_folder, monkeypatch):
    from optprune import data

    monkeypatch.setattr(data, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(FileNotFoundError, match="hub"):
        data.check_text_source("hf:allenai/c4:en")
    with pytest.raises(FileNotFoundError, match="validation split is not shipped"):
        data.check_text_source("wikitext2")
    with pytest.raises(FileNotFoundError, match="no such file"):
        data.check_text_source("missing.jsonl")


def test_strings_a_dataset_and_a_jsonl_file_give_the_same_windows(tiny_net, tmp_path):
    from datasets import Dataset

    from optprune.data import calibration_windows

    _, tok, _ = tiny_net
    texts = [f"The quick brown fox {i} jumps over the lazy dog. " * 5 for i in range(6)]
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    from_list = calibration_windows(tok, texts, 3, 24, seed=1)
    assert torch.equal(from_list, calibration_windows(tok, Dataset.from_dict({"text": texts}), 3, 24, seed=1))
    assert torch.equal(from_list, calibration_windows(tok, str(path), 3, 24, seed=1))
    with pytest.raises(ValueError, match="'text' column"):
        calibration_windows(tok, Dataset.from_dict({"body": texts}), 3, 24)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        calibration_windows(tok, [1, 2], 3, 24)


def test_the_api_calibrates_on_a_list_of_strings(tiny_net):
    import optprune

    net, tok, _ = tiny_net
    texts = ["The quick brown fox jumps over the lazy dog. " * 20] * 3
    report = optprune.prune(net, tok, method="wanda", pattern="per-row", sparsity=0.5, calib=texts, nsamples=2,
                            seqlen=32, device="cpu")
    assert report["fingerprint"]["calib"] == "texts"
    assert all(abs(r["sparsity"] - 0.5) < 1e-6 for r in report["layers"])
