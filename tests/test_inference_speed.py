"""validation/inference_speed.py's dry run on a tiny model (issue 37 item 3): the table's columns, the CSR path
measured beside the dense matmul, the same perplexity on both paths."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_inference_speed_dry_run_measures_every_path(tiny, tmp_path):
    run = subprocess.run([sys.executable, "validation/inference_speed.py", "--dry-run", "--model", str(tiny[0]),
                          "--work", str(tmp_path / "work"), "--out", str(tmp_path / "speed.md"), "--dtypes", "float32"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads((tmp_path / "speed.json").read_text())
    assert [(r["model"], r["path"]) for r in rows] == [("dense", "dense matmul"), ("unstructured 50%", "dense matmul"),
                                                       ("unstructured 50%", "sparse CSR")]
    assert all(r["prefill_tok_s"] > 0 and r["decode_b8_tok_s"] > 0 and r["peak_rss_gib"] > 0 for r in rows)
    assert abs(rows[1]["ppl"] - rows[2]["ppl"]) < 1e-3 * rows[1]["ppl"]      # the CSR path computes the same model
    assert "| unstructured 50% | float32 | sparse CSR |" in (tmp_path / "speed.md").read_text()


def test_an_unequal_width_gguf_is_rewritten_for_llama_cpps_deci_architecture(tmp_path):
    """llama.cpp's `llama` architecture holds one feed-forward width; its `deci` reads one per layer: the rewrite
    keeps every tensor and key, and states each layer's width and KV heads from the checkpoint's shapes."""
    import os

    import gguf
    import numpy as np

    import llama_cpp_rows          # validation/ is on the path (conftest)

    shapes = {"model.layers.0.mlp.up_proj": [16, 8], "model.layers.1.mlp.up_proj": [12, 8],
              "model.layers.0.self_attn.k_proj": [8, 8], "model.layers.1.self_attn.k_proj": [4, 8],
              "model.layers.0.self_attn.q_proj": [16, 8], "model.layers.1.self_attn.q_proj": [8, 8]}
    widths = llama_cpp_rows.per_layer_widths(shapes, 2)
    assert widths == dict(ff=[16, 12], q_rows=[16, 8], kv_rows=[8, 4])
    src, dest = tmp_path / "llama.gguf", tmp_path / "deci.gguf"
    w = gguf.GGUFWriter(str(src), "llama")
    w.add_block_count(2), w.add_embedding_length(8), w.add_feed_forward_length(16)
    w.add_head_count(2), w.add_head_count_kv(2), w.add_token_list(["a", "b"])
    tensors = {f"blk.{i}.ffn_up.weight": np.arange(ff * 8, dtype=np.float32).reshape(ff, 8)
               for i, ff in enumerate((16, 12))}
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    llama_cpp_rows.as_deci(src, dest, widths, dict(os.environ))
    r = gguf.GGUFReader(str(dest))
    fields = {f.name: f.contents() for f in r.fields.values() if not f.name.startswith("GGUF.")}
    assert fields["general.architecture"] == "deci" and not any(k.startswith("llama.") for k in fields)
    assert fields["deci.feed_forward_length"] == [16, 12] and fields["deci.attention.head_count_kv"] == [2, 1]
    assert fields["deci.attention.head_count"] == [4, 2]        # query heads per layer: q rows / head_dim 4
    assert fields["deci.block_count"] == 2 and fields["tokenizer.ggml.tokens"] == ["a", "b"]
    assert {t.name: np.array(t.data).reshape(tensors[t.name].shape).tolist() for t in r.tensors} == \
        {k: v.tolist() for k, v in tensors.items()}
