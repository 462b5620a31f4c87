"""A tiny random-weight llama GGUF for the conformance tests, written with the `gguf` package.

The weights are noise from a fixed seed, so the text is gibberish, but llama-server runs the
real code paths on it (tokenizer, prompt cache, sampling, usage and timings), and the file is
the same bytes on every machine. The vocabulary (llama's SentencePiece one) comes from the
llama.cpp tree the server was built from; fill-in-the-middle token ids are set so /infill works.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 1234
EMBEDDING = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
FEED_FORWARD = 128
CONTEXT = 512  # small on purpose: the context-overflow case needs a short prompt only
# <0x00>, <0x01>, <0x02>: any ids will do for a model that means nothing.
FIM_TOKENS = {"fim_pre": 3, "fim_suf": 4, "fim_mid": 5}
NAME = f"tiny-llama-{EMBEDDING}x{LAYERS}-s{SEED}.gguf"


def write_model(vocab_file: Path, out: Path) -> Path:
    """Write the model next to `out` atomically; returns `out`."""
    import gguf

    reader = gguf.GGUFReader(vocab_file)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    writer_path = out.with_suffix(".partial")
    writer = gguf.GGUFWriter(writer_path, "llama")
    writer.add_name("llm-exporter tiny random llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBEDDING)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(EMBEDDING // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for name, field in reader.fields.items():
        if name.startswith("tokenizer."):
            types = field.types
            writer.add_key_value(name, field.contents(), types[0], types[1] if len(types) > 1 else None)
    for kind, token_id in FIM_TOKENS.items():
        writer.add_uint32(f"tokenizer.ggml.{kind}_token_id", token_id)

    rng = np.random.default_rng(SEED)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    def norm() -> np.ndarray:
        return np.ones(EMBEDDING, dtype=np.float32)

    kv = EMBEDDING // HEADS * KV_HEADS
    writer.add_tensor("token_embd.weight", matrix(len(tokens), EMBEDDING))
    writer.add_tensor("output_norm.weight", norm())
    for i in range(LAYERS):
        blk = f"blk.{i}."
        writer.add_tensor(blk + "attn_norm.weight", norm())
        writer.add_tensor(blk + "attn_q.weight", matrix(EMBEDDING, EMBEDDING))
        writer.add_tensor(blk + "attn_k.weight", matrix(kv, EMBEDDING))
        writer.add_tensor(blk + "attn_v.weight", matrix(kv, EMBEDDING))
        writer.add_tensor(blk + "attn_output.weight", matrix(EMBEDDING, EMBEDDING))
        writer.add_tensor(blk + "ffn_norm.weight", norm())
        writer.add_tensor(blk + "ffn_gate.weight", matrix(FEED_FORWARD, EMBEDDING))
        writer.add_tensor(blk + "ffn_up.weight", matrix(FEED_FORWARD, EMBEDDING))
        writer.add_tensor(blk + "ffn_down.weight", matrix(EMBEDDING, FEED_FORWARD))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    writer_path.rename(out)
    return out


def tiny_model(cache: Path, vocab_file: Path) -> Path:
    """The cached model in `cache`, written on first use."""
    out = cache / NAME
    return out if out.is_file() else write_model(vocab_file, out)


if __name__ == "__main__":
    print(tiny_model(Path(sys.argv[1]), Path(sys.argv[2])))
