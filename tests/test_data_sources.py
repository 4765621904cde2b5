"""Calibration and evaluation text on a fresh machine: the shipped copies (checked by sha256), any
list of strings or HF Dataset as calibration, and one line where a source cannot be read."""
import json
import re

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


def test_json_lines_a_json_array_and_gzip_are_read_as_records_not_as_text(tmp_path):
    """A .json file as datasets.to_json writes it is JSON lines: its texts, never its '{"text": ...}' syntax."""
    import gzip

    from optprune.data import check_text_source, read_text_file

    docs = ["first document", "second one"]
    (tmp_path / "a.json").write_text("".join(json.dumps({"text": d, "id": k}) + "\n" for k, d in enumerate(docs)))
    (tmp_path / "b.json").write_text(json.dumps([{"text": d} for d in docs]))
    with gzip.open(tmp_path / "c.json.gz", "wt") as fh:
        fh.write("\n".join(json.dumps({"text": d}) for d in docs))
    (tmp_path / "d.txt").write_text('{"text": "kept as text"}')
    for name in ("a.json", "b.json", "c.json.gz"):
        assert read_text_file(tmp_path / name) == docs
        check_text_source(str(tmp_path / name))
    assert read_text_file(tmp_path / "d.txt") == ['{"text": "kept as text"}']


@pytest.mark.parametrize("name,content,message", [
    ("nokey.jsonl", b'{"text": "a"}\n{"body": "b"}\n', "nokey.jsonl: line 2 has no 'text' string (it has ['body'])"),
    ("bad.json", b'{"text": "a"}\n{"text": \n', "bad.json: line 2 is not JSON"),
    ("latin.txt", "caf\xe9".encode("latin-1"), "latin.txt: not UTF-8 text"),
    ("array.json", b'[{"text": "a"}, 3]', "array.json: item 1 has no 'text' string"),
    ("empty.jsonl", b"\n\n", "empty.jsonl: no records")])
def test_an_unreadable_calibration_file_gets_one_line_naming_it_before_any_model(tmp_path, name, content, message):
    from optprune.data import check_text_source

    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        check_text_source(str(tmp_path / name))


def test_a_text_too_short_for_distinct_windows_is_refused_and_overlap_is_counted(tiny_net):
    from optprune.data import calibration_windows, distinct_windows

    _, tok, _ = tiny_net
    text = ["abcdefghij" * 9]                     # 90 characters: 26 starts of 64-token windows
    with pytest.raises(ValueError, match="at most 26 distinct windows of 64, fewer than nsamples=30"):
        calibration_windows(tok, text, 30, 64)
    windows = calibration_windows(tok, text, 8, 64)
    assert distinct_windows(windows) == len({tuple(w.tolist()) for w in windows}) <= 8
