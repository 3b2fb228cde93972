#!/usr/bin/env python3
"""Build the tokenizer test corpus: about 1.3 MB of varied UTF-8 text in records separated by NUL
bytes, the same bytes on every machine.

  mkcorpus.py OUT_FILE

Inputs: the license texts of /usr/share/common-licenses (Debian's base-files, on every Debian
machine; fixed texts) and a seeded generator of its own (splitmix64, no library randomness) for
source code, CJK, Arabic, other scripts with combining marks, emoji sequences, whitespace and
newline runs, digit runs, contractions in mixed case and odd punctuation. Characters come from
blocks assigned long ago so that any Unicode 14+ table classifies them alike.
Each record is encoded on its own by the golden comparison (tools/tok/golden.py, test_tok_golden).
"""
import os
import sys

LICENSES = "/usr/share/common-licenses"


class Rng:
    """splitmix64: fixed forever, unlike a library generator."""

    def __init__(self, seed):
        self.s = seed & 0xFFFFFFFFFFFFFFFF

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n

    def between(self, a, b):  # inclusive
        return a + self.below(b - a + 1)

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def chance(self, num, den):
        return self.below(den) < num


def ranges_chars(ranges):
    out = []
    for a, b in ranges:
        out.extend(chr(c) for c in range(a, b + 1))
    return out


CJK = ranges_chars([(0x4E00, 0x9FA5)])
KANA = ranges_chars([(0x3041, 0x3096), (0x30A1, 0x30FA)])
HANGUL = ranges_chars([(0xAC00, 0xD7A3)])
CJK_PUNCT = list("、。「」『』！？：；（）・〜ー…") + ["\u3000"]
FULLWIDTH = ranges_chars([(0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A)])
ARABIC = ranges_chars([(0x0621, 0x063A), (0x0641, 0x064A)])
HARAKAT = ranges_chars([(0x064B, 0x0652)])
ARABIC_DIGITS = ranges_chars([(0x0660, 0x0669), (0x06F0, 0x06F9)])
ARABIC_PUNCT = ["\u060C", "\u061B", "\u061F", "\u0640", "\u066A", "\u200F", "\u200E"]
CYRILLIC = ranges_chars([(0x0410, 0x044F)]) + ["\u0401", "\u0451"]
GREEK = ranges_chars([(0x0391, 0x03A1), (0x03A3, 0x03A9), (0x03B1, 0x03C9)]) + list("άέήίόύώΆΈ")
DEVANAGARI = ranges_chars([(0x0905, 0x0939)])
DEVA_MARKS = ranges_chars([(0x093E, 0x094D)]) + ["\u0902", "\u0901"]
THAI = ranges_chars([(0x0E01, 0x0E2E)])
THAI_MARKS = ["\u0E31", "\u0E34", "\u0E35", "\u0E36", "\u0E37", "\u0E48", "\u0E49", "\u0E4A"]
HEBREW = ranges_chars([(0x05D0, 0x05EA)])
HEB_MARKS = ranges_chars([(0x05B0, 0x05B9)])
COMBINING = ranges_chars([(0x0300, 0x0315)])
ODD_LETTERS = list("ßıİǅǈǋʰʲˈªºµſÆæŒœÐðÞþŁłĳĲ") + ["\u1E9E", "\u2071", "\u207F"]
ODD_NUMBERS = list("²³¹¼½¾ⅠⅡⅢⅣⅫⅻ①②③⑩⓵") + ["\u2150", "\u0BE7", "\u0E51", "\u17E2"]
EMOJI = ranges_chars([(0x1F600, 0x1F64F), (0x1F300, 0x1F3FA), (0x1F680, 0x1F6C5),
                      (0x1F910, 0x1F93A)])
SKIN = ranges_chars([(0x1F3FB, 0x1F3FF)])
FLAGS = ["\U0001F1FA\U0001F1F8", "\U0001F1EF\U0001F1F5", "\U0001F1E9\U0001F1EA",
         "\U0001F1EB\U0001F1F7", "\U0001F1E7\U0001F1F7"]
ZWJ_SEQS = ["\U0001F468\u200D\U0001F469\u200D\U0001F467", "\U0001F3F3\uFE0F\u200D\U0001F308",
            "\u2764\uFE0F", "\U0001F441\uFE0F\u200D\U0001F5E8\uFE0F", "1\uFE0F\u20E3",
            "#\uFE0F\u20E3", "\u263A\uFE0E"]
SYMBOLS = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("§¶†‡•‰′″‹›«»¿¡‽№™©®°±×÷≈≠≤≥∞∑∏√∫∂∆∇€£¥¢₹₽—–‐‑‒―“”‘’‚„")
SPACES = [" ", " ", " ", "\t", "\u00A0", "\u2003", "\u2009", "\u3000", "\u202F", "\u205F",
          "\u000B", "\u000C", "\u0085", "\u2028", "\u1680"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'rE", "'M",
                "'LL", "'lL", "'D", "'ſ", "\u2019s", "\u2019t", "'x", "'", "''", "'l", "'r"]
SPECIAL_TEXT = ["<|endoftext|>", "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|call|>",
                "<|return|>", "<|reserved_200013|>", "<|", "|>", "<||>", "<|endofprompt|>"]


def licenses():
    seen, texts = set(), []
    for name in sorted(os.listdir(LICENSES)):
        path = os.path.realpath(os.path.join(LICENSES, name))
        if path in seen or not os.path.isfile(path):
            continue
        seen.add(path)
        with open(path, "rb") as f:
            texts.append(f.read().decode("utf-8", errors="replace"))
    if not texts:
        sys.exit("mkcorpus: no license texts in %s" % LICENSES)
    return texts


def chunks(text, rng, lo, hi):
    """Split text at paragraph or line boundaries into pieces of lo..hi characters."""
    out, i = [], 0
    while i < len(text):
        n = rng.between(lo, hi)
        j = text.find("\n", i + n)
        j = len(text) if j < 0 else j + 1
        out.append(text[i:j])
        i = j
    return out


def words_of(texts):
    words = []
    for t in texts:
        for w in t.split():
            w = w.strip(".,;:()\"'[]")
            if w.isalpha():
                words.append(w)
    return words


def mixed_case(rng, w):
    k = rng.below(6)
    if k == 0:
        return w.upper()
    if k == 1:
        return w.capitalize()
    if k == 2:
        return "".join(c.upper() if rng.chance(1, 3) else c.lower() for c in w)
    if k == 3:
        return w[:1].lower() + w[1:].upper()
    return w.lower()


def prose_mixed(rng, words, n):
    out = []
    while sum(len(x) for x in out) < n:
        w = mixed_case(rng, rng.pick(words))
        if rng.chance(1, 4):
            w += rng.pick(CONTRACTIONS)
        if rng.chance(1, 12):
            w = rng.pick(SYMBOLS) + w
        if rng.chance(1, 10):
            w += rng.pick([".", ",", "!", "?", ";", ":", "...", "?!", "\u2026", ")"])
        out.append(w)
        sep = " "
        if rng.chance(1, 15):
            sep = rng.pick(["\n", "\n\n", "  ", " \n", "\r\n", "\t", " - "])
        out.append(sep)
    return "".join(out)


IDENTS = ["value", "count", "buffer", "parse", "token", "index", "result", "node", "next",
          "http", "URL", "json", "max", "min", "len", "i", "j", "k", "x", "tmp", "data", "self",
          "state", "config", "request", "response", "error", "handler", "items", "key"]


def ident(rng):
    parts = [rng.pick(IDENTS) for _ in range(rng.between(1, 3))]
    k = rng.below(5)
    if k == 0:
        return "_".join(parts)
    if k == 1:
        return parts[0] + "".join(p.capitalize() for p in parts[1:])
    if k == 2:
        return "_".join(p.upper() for p in parts)
    if k == 3:
        return "".join(p.capitalize() for p in parts) + str(rng.below(100))
    return parts[0]


def number(rng):
    k = rng.below(8)
    if k == 0:
        return "0x%X" % rng.next()
    if k == 1:
        return "%d.%0*d" % (rng.below(1000), rng.between(1, 6), rng.below(10 ** 6) % 10 ** 6)
    if k == 2:
        return "".join(str(rng.below(10)) for _ in range(rng.between(4, 40)))
    if k == 3:
        return "%de-%d" % (rng.below(100), rng.below(20))
    if k == 4:
        return "{:,}".format(rng.below(10 ** 12))
    return str(rng.below(10 ** rng.between(1, 6)))


def code(rng, n):
    lines, depth = [], 0
    style = rng.below(3)
    nl = "\r\n" if rng.chance(1, 6) else "\n"
    ind = "\t" if rng.chance(1, 4) else " " * rng.pick([2, 4, 8])
    while sum(len(x) for x in lines) < n:
        k = rng.below(10)
        pre = ind * depth
        if k == 0 and depth < 6:
            if style == 0:
                lines.append("%sif (%s %s %s) {" % (pre, ident(rng), rng.pick(["==", "!=", "<=", ">>", "&&", "||"]), number(rng)))
            elif style == 1:
                lines.append("%sdef %s(%s, %s=%s):" % (pre, ident(rng), ident(rng), ident(rng), number(rng)))
            else:
                lines.append("%sconst %s = (%s) => {" % (pre, ident(rng), ident(rng)))
            depth += 1
        elif k == 1 and depth > 0:
            depth -= 1
            if style != 1:
                lines.append(ind * depth + rng.pick(["}", "};", "})", "}}"]))
        elif k == 2:
            lines.append("%s%s %s" % (pre, rng.pick(["//", "#", "/*", "--", ";;"]), prose_mixed(rng, IDENTS, rng.between(10, 60)).replace("\n", " ")))
        elif k == 3:
            lines.append("")
        elif k == 4:
            lines.append("%s%s = \"%s\\n\";%s" % (pre, ident(rng), prose_mixed(rng, IDENTS, 20).replace("\n", " "), " " * rng.below(4)))
        elif k == 5:
            lines.append("%sreturn %s%s%s;" % (pre, ident(rng), rng.pick(["->", ".", "::", "?.", "[", "**"]), ident(rng)))
        else:
            lines.append("%s%s%s= %s(%s, %s)%s" % (pre, ident(rng), rng.pick([" ", " +", " |", " <<", ""]), ident(rng), number(rng), ident(rng), rng.pick([";", "", ",", " \\"])))
    return nl.join(lines) + nl


def script_text(rng, n, letters, marks=None, mark_rate=3, digits=None, punct=None, space=" "):
    out, size = [], 0
    while size < n:
        w = []
        for _ in range(rng.between(1, 9)):
            w.append(rng.pick(letters))
            if marks and rng.chance(1, mark_rate):
                w.append(rng.pick(marks))
                if rng.chance(1, 8):
                    w.append(rng.pick(marks))
        word = "".join(w)
        if digits and rng.chance(1, 8):
            word = "".join(rng.pick(digits) for _ in range(rng.between(1, 7)))
        if punct and rng.chance(1, 5):
            word += rng.pick(punct)
        out.append(word)
        out.append(space if not rng.chance(1, 20) else rng.pick(["\n", space * 2, "\n\n", " "]))
        size += len(word) + 1
    return "".join(out)


def cjk(rng, n):
    out, size = [], 0
    while size < n:
        k = rng.below(10)
        if k < 4:
            s = "".join(rng.pick(CJK) for _ in range(rng.between(1, 12)))
        elif k < 6:
            s = "".join(rng.pick(KANA) for _ in range(rng.between(1, 10)))
        elif k < 8:
            s = "".join(rng.pick(HANGUL) for _ in range(rng.between(1, 5))) + " "
        elif k == 8:
            s = "".join(rng.pick(FULLWIDTH) for _ in range(rng.between(1, 6)))
        else:
            s = rng.pick(["Tokyo", "GPU", "2024年", "第3章", "iPhone", "AI", "100%", "v1.2"])
        out.append(s)
        out.append(rng.pick(CJK_PUNCT) if rng.chance(1, 3) else "")
        if rng.chance(1, 25):
            out.append("\n")
        size += len(s) + 1
    return "".join(out)


def emoji(rng, n):
    out, size = [], 0
    while size < n:
        k = rng.below(8)
        if k < 3:
            s = rng.pick(EMOJI)
        elif k == 3:
            s = rng.pick(EMOJI) + rng.pick(SKIN)
        elif k == 4:
            s = rng.pick(FLAGS)
        elif k == 5:
            s = rng.pick(ZWJ_SEQS)
        elif k == 6:
            s = rng.pick(["lol", "ok", "Great", "wow", "see you", "GG", "thx"]) + rng.pick(["", " ", "!"])
        else:
            s = "".join(rng.pick(EMOJI) for _ in range(rng.between(2, 8)))
        out.append(s)
        out.append(rng.pick(["", " ", " ", "  ", "\n", "!"]))
        size += len(s) + 1
    return "".join(out)


def whitespace(rng, n):
    out, size = [], 0
    while size < n:
        k = rng.below(9)
        if k == 0:
            s = " " * rng.between(1, 300)
        elif k == 1:
            s = "\n" * rng.between(1, 40)
        elif k == 2:
            s = "".join(rng.pick(["\r\n", "\n", "\r", " \n", "\t\n", "  \r\n"]) for _ in range(rng.between(1, 20)))
        elif k == 3:
            s = "".join(rng.pick(SPACES) for _ in range(rng.between(1, 30)))
        elif k == 4:
            s = "\t" * rng.between(1, 30)
        else:
            s = rng.pick(["word", "x", "Foo", "bar.", "1", "(", "'s", "中", "é", "ok\n"])
        out.append(s)
        size += len(s)
    return "".join(out)


def digits(rng, n):
    out, size = [], 0
    while size < n:
        k = rng.below(10)
        if k < 3:
            s = "".join(str(rng.below(10)) for _ in range(rng.between(1, 120)))
        elif k == 3:
            s = "%d-%02d-%02dT%02d:%02d:%02dZ" % (rng.between(1900, 2100), rng.between(1, 12), rng.between(1, 28), rng.below(24), rng.below(60), rng.below(60))
        elif k == 4:
            s = "+1 (%03d) %03d-%04d" % (rng.below(1000), rng.below(1000), rng.below(10000))
        elif k == 5:
            s = "%d.%d.%d" % (rng.below(20), rng.below(100), rng.below(1000))
        elif k == 6:
            s = "".join(rng.pick(ODD_NUMBERS + ARABIC_DIGITS) for _ in range(rng.between(1, 9)))
        elif k == 7:
            s = "abc%ddef%sX%d" % (rng.below(10 ** 5), rng.pick(["", "_", "-"]), rng.below(10 ** 9))
        else:
            s = number(rng)
        out.append(s)
        out.append(rng.pick([" ", " ", ", ", "\n", "", ".", "%"]))
        size += len(s) + 1
    return "".join(out)


def punctuation(rng, n):
    out, size = [], 0
    while size < n:
        k = rng.below(10)
        if k < 3:
            s = "".join(rng.pick(SYMBOLS) for _ in range(rng.between(1, 12)))
        elif k == 3:
            s = rng.pick(SPECIAL_TEXT)
        elif k == 4:
            s = rng.pick(["https://example.com/a/b?c=d&e=f#g", "/usr/lib/x86_64-linux-gnu//",
                          "C:\\Windows\\System32", "user@example.org", ":-)", ";-P", "<3", "-->",
                          "=>", "!==", "...", "???", "!!!", "''", "\"\"\"", "'''", "/*/", "//\n//"])
        elif k == 5:
            s = rng.pick(SYMBOLS) * rng.between(2, 80) + rng.pick(["\n", "/", "\r\n", "/\n", ""])
        elif k == 6:
            s = rng.pick(ODD_LETTERS) + rng.pick(COMBINING) + rng.pick(ODD_LETTERS)
        elif k == 7:
            s = "e\u0301" + rng.pick(["cole", "TÉ", "\u0301\u0302", ""]) + rng.pick(COMBINING)
        else:
            s = mixed_case(rng, rng.pick(IDENTS)) + rng.pick(CONTRACTIONS) + rng.pick(SYMBOLS)
        out.append(s)
        out.append(rng.pick(["", " ", " ", "\n", "  ", "\t"]))
        size += len(s) + 1
    return "".join(out)


def long_runs(rng):
    """Pieces longer than 256 bytes (the heap merge path) and other extremes."""
    recs = []
    recs.append(" " * 5000 + "x")
    recs.append("a" * 3000)
    recs.append("=" * 1000 + "\n")
    recs.append("".join(rng.pick("abcdefghijklmnopqrstuvwxyz") for _ in range(2000)))
    recs.append("".join(rng.pick(CJK) for _ in range(800)))
    recs.append("".join(rng.pick(ARABIC + HARAKAT) for _ in range(900)))
    recs.append("\n" * 700 + " " * 300)
    recs.append("".join(rng.pick(EMOJI) for _ in range(400)))
    recs.append("9" * 1001)
    recs.append("Ab" * 700)
    recs.append("\u00e9" * 600 + "\u0301" * 300)
    recs.append("".join(rng.pick(SYMBOLS) for _ in range(1500)))
    recs.append(" \t" * 400 + "end")
    recs.append("")
    recs.append(" ")
    recs.append("\n")
    recs.append("'s")
    recs.append("ſ'ſ")
    return recs


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: mkcorpus.py OUT_FILE")
    rng = Rng(20240806)
    texts = licenses()
    words = words_of(texts)
    records = []
    for t in texts:
        records.extend(chunks(t, rng, 600, 3000))
    gens = [
        lambda n: prose_mixed(rng, words, n),
        lambda n: code(rng, n),
        lambda n: cjk(rng, n),
        lambda n: script_text(rng, n, ARABIC, HARAKAT, 3, ARABIC_DIGITS, ARABIC_PUNCT),
        lambda n: emoji(rng, n),
        lambda n: whitespace(rng, n),
        lambda n: digits(rng, n),
        lambda n: punctuation(rng, n),
        lambda n: script_text(rng, n, CYRILLIC, None, 3, None, [".", ",", "!", "?", "\u00bb"]),
        lambda n: script_text(rng, n, GREEK, COMBINING, 9, None, [";", ".", "\u0387"]),
        lambda n: script_text(rng, n, DEVANAGARI, DEVA_MARKS, 2, ranges_chars([(0x0966, 0x096F)]), ["\u0964"]),
        lambda n: script_text(rng, n, THAI, THAI_MARKS, 2, None, None, ""),
        lambda n: script_text(rng, n, HEBREW, HEB_MARKS, 3, None, ["\u05BE", ".", ","]),
        lambda n: script_text(rng, n, ODD_LETTERS + list("abcXYZ"), COMBINING, 4, ODD_NUMBERS, SYMBOLS),
    ]
    target = 1_300_000
    size = sum(len(r.encode()) for r in records)
    i = 0
    while size < target:
        r = gens[i % len(gens)](rng.between(200, 2500))
        # Some records mix two kinds, so that boundaries between scripts are covered too.
        if rng.chance(1, 3):
            r += gens[rng.below(len(gens))](rng.between(50, 600))
        records.append(r)
        size += len(r.encode())
        i += 1
    records.extend(long_runs(rng))
    data = b"\0".join(r.encode("utf-8") for r in records)
    with open(sys.argv[1], "wb") as f:
        f.write(data)
    print("mkcorpus: %d records, %d bytes" % (len(records), len(data)))


main()
