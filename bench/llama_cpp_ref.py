#!/usr/bin/env python3
"""llama.cpp reference timing for bench/cpu.sh (through llama-cpp-python).

Measures the same two numbers as bench_cpu on the same GGUF: prefill of N
pseudo-random tokens in one batch, and single-token greedy decode steps after
a 16-token prompt. Median of R runs after a warm-up. Prints one JSON line.
"""
import argparse, json, os, sys, time

import numpy as np
import llama_cpp


def ids_like_bench(n, vocab):
    # the same LCG as bench_cpu.c, so both tools see the same token ids
    out, r = [], 12345
    for _ in range(n):
        r = (r * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append((r >> 33) % vocab)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=a.prefill + a.decode + 32, n_batch=max(512, a.prefill),
                          n_ubatch=max(512, a.prefill), n_threads=a.threads, n_threads_batch=a.threads,
                          verbose=False, logits_all=False)
    ids = ids_like_bench(a.prefill, llm.n_vocab())
    pre, dec = [], []
    for run in range(a.runs + 1):
        llm.reset()
        llm._ctx.kv_cache_clear()
        t0 = time.perf_counter()
        llm.eval(ids)
        np.argmax(llm._scores[-1])
        t1 = time.perf_counter()
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(ids[:16])
        tok = int(np.argmax(llm._scores[-1]))
        t2 = time.perf_counter()
        for _ in range(a.decode - 1):
            llm.eval([tok])
            tok = int(np.argmax(llm._scores[-1]))
        t3 = time.perf_counter()
        if run > 0:
            pre.append(a.prefill / (t1 - t0))
            dec.append((a.decode - 1) / (t3 - t2))
    print(json.dumps({"impl": "llama.cpp (llama-cpp-python %s)" % llama_cpp.__version__,
                      "model": os.path.basename(a.model), "threads": a.threads,
                      "prefill_tokens": a.prefill, "decode_tokens": a.decode, "runs": a.runs,
                      "prefill_tok_s": round(float(np.median(pre)), 2),
                      "decode_tok_s": round(float(np.median(dec)), 2)}))


if __name__ == "__main__":
    sys.exit(main())
