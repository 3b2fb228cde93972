#!/usr/bin/env python3
"""Golden ids and encode speed from tiktoken, the oracle for mg_tok. Run where tiktoken is installed
(it downloads nothing: the ranks file is given).

  golden.py RANKS CORPUS OUT_DIR [--bench N]

Writes into OUT_DIR:
  o200k_corpus.golden   per record of the NUL-separated corpus (tools/tok/mkcorpus.py): index,
                        byte length, FNV-1a 64 of its bytes, token count, FNV-1a 64 of its ids
                        (little-endian u32); encode_ordinary, as test_tok_golden compares
  o200k_corpus_ids.txt  the full ids of every 64th record, to show the first differing id
  specials.golden       ids of strings with special-token text, allowed_special="all"
With --hf DIR: also encode every record with Hugging Face tokenizers from DIR/tokenizer.json (as
written by mk-tokenizer-json) and print how many records differ from tiktoken.
With --bench N: encode_ordinary of the whole corpus as one string, best of N, single thread; prints
tiktoken_mb_s and tiktoken_tok_s.
"""
import sys
import time
from array import array

import tiktoken
from tiktoken.load import load_tiktoken_bpe

PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

NAMED = {
    "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002,
    "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007,
    "<|message|>": 200008, "<|call|>": 200012, "<|endofprompt|>": 200018,
}

SPECIAL_CASES = [
    "<|start|>user<|message|>What is 2 + 2?<|end|><|start|>assistant",
    "<|channel|>analysis<|message|>User asks: \"What is 2 + 2?\" Simple arithmetic.<|end|>",
    "text <|endoftext|> more <|endofprompt|>",
    "<|reserved_200013|><|reserved_201087|><|reserved_200000|>",
    "<|not_special|> <| start |> <|start| <|start|><|start|>",
    "a<|call|>b<|return|>c<|constrain|>json",
    "<|startoftext|>",
    "<<|end|>>|>",
]


def fnv64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def ids_bytes(ids):
    a = array("I", ids)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def main():
    args = sys.argv[1:]
    bench = 0
    if "--bench" in args:
        i = args.index("--bench")
        bench = int(args[i + 1])
        del args[i:i + 2]
    hf_dir = None
    if "--hf" in args:
        i = args.index("--hf")
        hf_dir = args[i + 1]
        del args[i:i + 2]
    ranks_path, corpus_path, out = args
    specials = dict(NAMED)
    for i in range(199998, 201088):
        if i not in specials.values():
            specials["<|reserved_%d|>" % i] = i
    enc = tiktoken.Encoding("o200k_harmony", pat_str=PAT,
                            mergeable_ranks=load_tiktoken_bpe(ranks_path), special_tokens=specials)
    data = open(corpus_path, "rb").read()
    records = data.split(b"\0")
    with open(out + "/o200k_corpus.golden", "w") as g, open(out + "/o200k_corpus_ids.txt", "w") as f:
        g.write("# o200k_harmony ids (tiktoken %s encode_ordinary) of tools/tok/mkcorpus.py's corpus\n"
                % tiktoken.__version__)
        g.write("corpus %d %016x\n" % (len(data), fnv64(data)))
        g.write("records %d\n" % len(records))
        for i, r in enumerate(records):
            ids = enc.encode_ordinary(r.decode("utf-8"))
            g.write("%d %d %016x %d %016x\n" % (i, len(r), fnv64(r), len(ids), fnv64(ids_bytes(ids))))
            if i % 64 == 0:
                f.write("%d %s\n" % (i, " ".join(map(str, ids))))
    with open(out + "/specials.golden", "w") as s:
        s.write("# ids with allowed_special=\"all\" (tiktoken %s); hex of the UTF-8 text, then ids\n"
                % tiktoken.__version__)
        for c in SPECIAL_CASES:
            s.write("%s %s\n" % (c.encode().hex(), " ".join(map(str, enc.encode(c, allowed_special="all")))))
    if hf_dir:
        from tokenizers import Tokenizer
        hf = Tokenizer.from_file(hf_dir + "/tokenizer.json")
        bad = 0
        for i, r in enumerate(records):
            t = r.decode("utf-8")
            a, b = enc.encode_ordinary(t), hf.encode(t, add_special_tokens=False).ids
            if a != b:
                bad += 1
                if bad <= 3:
                    k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
                    print("hf differs: record %d at id %d: tiktoken %s hf %s" % (i, k, a[k:k + 4], b[k:k + 4]))
        print("hf_tokenizers: %d of %d records differ from tiktoken" % (bad, len(records)))
        s = "<|start|>user<|message|>hi<|end|>"
        print("hf specials:", hf.encode(s, add_special_tokens=False).ids, enc.encode(s, allowed_special="all"))
    if bench:
        text = data.decode("utf-8")
        best, n = 1e30, 0
        enc.encode_ordinary(text)  # warm up
        for _ in range(bench):
            t0 = time.perf_counter()
            n = len(enc.encode_ordinary(text))
            best = min(best, time.perf_counter() - t0)
        print("tiktoken %s: %d bytes, %d tokens" % (tiktoken.__version__, len(data), n))
        print("tiktoken_mb_s %.2f" % (len(data) / best / 1e6))
        print("tiktoken_tok_s %.0f" % (n / best))


main()
