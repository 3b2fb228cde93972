#!/usr/bin/env python3
"""Reference logits and greedy continuations from Hugging Face transformers' GptOssForCausalLM,
written as a small text golden file that the C tests (tests/unit/test_cpu_golden.c) compare with
the CPU engine on the very same checkpoint files.

Run where PyTorch and transformers (>= 4.55, with GptOssForCausalLM) are installed:

    mg-mkckpt --preset tiny --out /tmp/tiny
    python3 tools/oracle/hf_golden.py --ckpt /tmp/tiny --name tiny --maker-args "--preset tiny" \
        --lengths 1,7,40,200 --greedy 1,3 --out tests/golden/model/tiny.golden

By default the model is loaded in float32 on the CPU with MXFP4 experts dequantized (exact:
e2m1 values times powers of two), eager attention (which implements the sinks), so its arithmetic
is that of the float32 CPU engine up to summation order. --dtype bfloat16 --device cuda runs it
in bf16 on a GPU instead, for shapes whose float32 copy would not fit (the 20b shape needs ~84 GB
in float32); its logits then carry bf16 rounding (~1e-2 of the row's largest), and the header
records that so a reader picks its tolerance (worker/cuda/cuda_agree.c).

The prompts are deterministic token ids; the file records them, the SHA-256 of every checkpoint
file (the C test regenerates the checkpoint with the maker and checks the hashes first), for
chosen positions the top-16 logits and 64 fixed sample logits, and for chosen prompts
--new-tokens greedy tokens (256 by default) with the smallest top-1/top-2 margin seen (how close
an argmax came to flipping) and, per step, that margin relative to the row's largest |logit|
(where a continuation that differs from this one may differ at a near-tie).

Format (one record per line, whitespace separated):
    magneto-golden 1
    checkpoint NAME maker-args...
    oracle torch DTYPE DEVICE     (float32|bfloat16, cpu|cuda; absent in older files: float32 cpu)
    file NAME SHA256
    vocab V
    prompt I N tok...
    row I POS MAXABS  idx:val ...(top 16)  |  idx:val ...(64 samples)
    greedy I N MARGIN tok...
    margins I N m...              (after its greedy line: (top1 - top2) / max |logit| per step)
Readers skip records they do not know.
"""
import argparse
import hashlib
import os
import sys

import torch


def prompt_tokens(i, n, vocab):
    # A fixed LCG so that the prompts need no tokenizer and are the same everywhere.
    x = 12345 + 7919 * i
    out = []
    for _ in range(n):
        x = (x * 1103515245 + 12345) % (1 << 31)
        out.append(x % vocab)
    return out


def sample_ids(vocab):
    return [(j * 3079 + 11) % vocab for j in range(64)]


def rows_for(n):
    rows = {0, n // 2, n - 1}
    rows |= {p for p in (127, 128, 129) if p < n}
    return sorted(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--maker-args", default="")
    ap.add_argument("--lengths", required=True, help="prompt lengths, comma separated")
    ap.add_argument("--greedy", default="", help="prompt indices to continue greedily")
    ap.add_argument("--new-tokens", type=int, default=256, help="greedy tokens per prompt")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--out", required=True)
    ap.add_argument("--debug", default="", help="also write per-layer hidden states of prompt 1 here")
    a = ap.parse_args()

    import transformers
    from transformers import GptOssForCausalLM
    try:
        from transformers import Mxfp4Config
        qc = {"quantization_config": Mxfp4Config(dequantize=True)}
    except ImportError:
        qc = {}
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch.manual_seed(0)
    dtype = torch.float32 if a.dtype == "float32" else torch.bfloat16
    dev = torch.device(a.device)
    kw = dict(dtype=dtype, device_map=a.device, attn_implementation="eager")
    try:
        model = GptOssForCausalLM.from_pretrained(a.ckpt, **kw, **qc)
    except Exception as e:  # older or newer quantizer API: let the checkpoint's config decide
        print(f"loading with {qc} failed ({e!r}); retrying with the checkpoint's config",
              file=sys.stderr)
        model = GptOssForCausalLM.from_pretrained(a.ckpt, **kw)
    # transformers dequantizes MXFP4 experts to bf16; e2m1 values times powers of two are exact
    # in bf16, and widening to float32 is exact, so this only sets the arithmetic to the dtype.
    # (Parameter by parameter: transformers refuses .float() on a model it loaded quantized.)
    with torch.no_grad():
        for mod in model.modules():
            for pname, p in list(mod.named_parameters(recurse=False)):
                if p.dtype != dtype:
                    p.data = p.data.to(dtype)
            for bname, buf in list(mod.named_buffers(recurse=False)):
                if buf is not None and buf.is_floating_point() and buf.dtype != dtype:
                    # RoPE's inverse frequencies are float32 in any case (as the engines keep them)
                    mod._buffers[bname] = buf.float() if "inv_freq" in bname else buf.to(dtype)
    model.eval()
    cfg = model.config
    vocab = cfg.vocab_size
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, "
          f"vocab {vocab}, layers {cfg.num_hidden_layers}, {a.dtype} on {a.device}",
          file=sys.stderr)
    # Any parameter left in another dtype would make the comparison meaningless.
    bad = [n for n, p in model.named_parameters() if p.dtype != dtype]
    if bad:
        sys.exit(f"parameters not {a.dtype}: {bad[:5]}")

    lines = ["magneto-golden 1", f"checkpoint {a.name} {a.maker_args}".rstrip(),
             f"oracle torch {a.dtype} {a.device}"]
    for f in sorted(os.listdir(a.ckpt)):
        h = hashlib.sha256()
        with open(os.path.join(a.ckpt, f), "rb") as fh:  # in pieces: 20b shards are GBs
            for piece in iter(lambda: fh.read(1 << 24), b""):
                h.update(piece)
        lines.append(f"file {f} {h.hexdigest()}")
    lines.append(f"vocab {vocab}")
    samples = sample_ids(vocab)
    lengths = [int(x) for x in a.lengths.split(",")]
    prompts = [prompt_tokens(i, n, vocab) for i, n in enumerate(lengths)]
    with torch.no_grad():
        for i, toks in enumerate(prompts):
            lines.append(f"prompt {i} {len(toks)} " + " ".join(map(str, toks)))
            ids = torch.tensor([toks], device=dev)
            out = model(input_ids=ids, use_cache=False, output_hidden_states=bool(a.debug) and i == 1)
            logits = out.logits[0].float().cpu()
            for p in rows_for(len(toks)):
                row = logits[p]
                vals, idx = torch.topk(row, 16)
                top = " ".join(f"{int(j)}:{float(v):.9g}" for j, v in zip(idx, vals))
                smp = " ".join(f"{j}:{float(row[j]):.9g}" for j in samples)
                lines.append(f"row {i} {p} {float(row.abs().max()):.9g} {top} | {smp}")
            if a.debug and i == 1:
                with open(a.debug, "w") as fh:
                    for li, h in enumerate(out.hidden_states):
                        for t in range(h.shape[1]):
                            fh.write(f"h {li} {t} " + " ".join(f"{float(v):.9g}" for v in h[0, t].float()) + "\n")
        for gi in [int(x) for x in a.greedy.split(",") if x]:
            toks = prompts[gi]
            out = model(input_ids=torch.tensor([toks], device=dev), use_cache=True)
            past = out.past_key_values
            gen, margin, rel = [], float("inf"), []
            row = out.logits[0, -1].float()
            for step in range(a.new_tokens):
                top2 = torch.topk(row, 2).values
                gap = float(top2[0] - top2[1])
                margin = min(margin, gap)
                rel.append(gap / max(float(row.abs().max()), 1e-30))
                nxt = int(torch.argmax(row))
                gen.append(nxt)
                if step + 1 == a.new_tokens:
                    break
                out = model(input_ids=torch.tensor([[nxt]], device=dev), past_key_values=past,
                            use_cache=True)
                past = out.past_key_values
                row = out.logits[0, -1].float()
            lines.append(f"greedy {gi} {len(gen)} {margin:.6g} " + " ".join(map(str, gen)))
            lines.append(f"margins {gi} {len(rel)} " + " ".join(f"{m:.4g}" for m in rel))
    with open(a.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
