#!/usr/bin/env python3
"""Random Llama-3.1-8B-shaped GGUF for llama-bench (bench/gpu.sh), written with
llama.cpp's own gguf-py (pass its directory with --gguf-py).

Speed depends on shapes and quantization types, not on the weight values, so
the quantized blocks are random bytes with a small valid f16 scale; no f16
model is made first (that would be 16 GB). Types follow llama-quantize:
  q4_0:   every linear and token_embd Q4_0, output Q6_K
  q4_k_m: Q4_K, except attn_v and ffn_down of the "more bits" layers (the
          first and last eighth, and every third in between) and output: Q6_K
A dummy SentencePiece vocabulary of 128256 tokens (with the 256 byte tokens)
lets llama.cpp load it; llama-bench feeds random token ids anyway.
"""
import argparse
import sys

import numpy as np

DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = 4096, 32, 32, 8, 14336, 128256
BLOCK = {"Q4_0": (32, 18), "Q4_K": (256, 144), "Q6_K": (256, 210)}


def blocks(rng, qtype, rows, cols):
    n, size = BLOCK[qtype]
    b = rng.integers(0, 256, size=(rows, cols // n, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.002).tobytes(), dtype=np.uint8)
    if qtype == "Q4_0":
        b[:, :, 0:2] = scale
    elif qtype == "Q4_K":
        b[:, :, 0:2] = scale
        b[:, :, 2:4] = scale
    else:  # Q6_K: d is the last field
        b[:, :, 208:210] = scale
    return b.reshape(rows, -1)


def more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf-py", required=True, help="llama.cpp's gguf-py directory")
    ap.add_argument("--type", choices=["q4_0", "q4_k_m"], required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sys.path.insert(0, a.gguf_py)
    import gguf

    Q = gguf.GGMLQuantizationType
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("random-llama-3.1-8b-shapes")
    w.add_context_length(131072)
    w.add_embedding_length(DIM)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(DIM // HEADS)
    w.add_file_type(2 if a.type == "q4_0" else 15)  # LLAMA_FTYPE_MOSTLY_Q4_0 / Q4_K_M
    toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(256)]
    toks += ["t%d" % i for i in range(len(toks), VOCAB)]
    types = [2, 3, 3] + [6] * 256 + [1] * (VOCAB - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([0.0] * VOCAB)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    base = "Q4_0" if a.type == "q4_0" else "Q4_K"

    def lin(name, qt, rows, cols):
        w.add_tensor(name, blocks(rng, qt, rows, cols), raw_shape=(rows, cols), raw_dtype=getattr(Q, qt))

    lin("token_embd.weight", base, VOCAB, DIM)
    for i in range(LAYERS):
        p = "blk.%d." % i
        w.add_tensor(p + "attn_norm.weight", np.ones(DIM, dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(DIM, dtype=np.float32))
        hi = a.type == "q4_k_m" and more_bits(i, LAYERS)
        lin(p + "attn_q.weight", base, DIM, DIM)
        lin(p + "attn_k.weight", base, KV_HEADS * 128, DIM)
        lin(p + "attn_v.weight", "Q6_K" if hi else base, KV_HEADS * 128, DIM)
        lin(p + "attn_output.weight", base, DIM, DIM)
        lin(p + "ffn_gate.weight", base, FFN, DIM)
        lin(p + "ffn_up.weight", base, FFN, DIM)
        lin(p + "ffn_down.weight", "Q6_K" if hi else base, DIM, FFN)
    w.add_tensor("output_norm.weight", np.ones(DIM, dtype=np.float32))
    lin("output.weight", "Q6_K", VOCAB, DIM)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
