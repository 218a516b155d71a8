"""Regenerate the per-target opcode tables (<target>.json) from LLVM: `python -m kfdtrace.driver.isa.generate`
(`--only VOP1_DPP,...` for some encodings).

For every encoding of every target, every opcode value is disassembled by llvm-mc-19 with recognisable operand
values (each register field holds its own register number: 16, 32, 48, ...); LLVM's text gives the mnemonic,
which fields print as which operand and how many registers each spans. Further probes, one field changed at a
time, give the rest: which fields must be zero (LLVM calls the word invalid otherwise), which modifier bits print
and how, how each source prints constants and literals (operands.CLASSES), and how an immediate prints
(decoder.IMM_FORMATS). Nothing here runs at import; the JSON it writes is committed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from .decoder import IMM_FORMATS, render_imm
from .encodings import TARGETS, Encoding, encodings_for, match
from .llvm import CRASHED, MARKER_WORD, disassemble
from .operands import CLASSES, constant_text, literal_text

HERE = Path(__file__).resolve().parent
REG_KINDS = ("src", "ssrc", "sreg", "vgpr", "sbase", "srsrc", "vdsty", "sdwa")
PROBE_LITERAL = 0x12345678
_REG = re.compile(r"^(v|s|a|ttmp)(?:(\d+)|\[(\d+):(\d+)\])$")
_LITS = (0x12345678, 0x3F800000, 5, 0x3E22F983, 0x3800, 0x40490FDB, 0x3FE00000, 0x80000000, 0x3C00, 0xFFFFFFF0,
         0x3118, 0x0FFF0000)
_CONSTS = (128, 192, 193, 208, 240, 241, 242, 247, 248)
_IMM_PROBES = (1, 0x1234, 0xFFFF, 0x8000, 0x0F0F, 0x00AA, 0x3F, 0x7F, 0x100)


def annotated_invalid(text: str) -> bool:
    """LLVM decoded the word but marked an operand invalid (/*Invalid register...*/): we refuse such words."""
    return "/*Invalid" in text


def split_operands(rest: str) -> list[str]:
    """Split LLVM's operand text at top-level commas (not inside (), [])."""
    out, depth, cur = [], 0, ""
    for ch in rest:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def split_text(text: str, free_form: bool) -> tuple[str, list[str], list[str]]:
    """(mnemonic, operands, suffix tokens). Free-form encodings (SOPP/SOPK) keep spaces inside the last operand;
    a /* comment */ is one token (DPP's "/* Invalid dpp_ctrl value */")."""
    if "/* " in text and not free_form:
        mnemonic, ops, suffix = split_text(re.sub(r"/\*.*?\*/", lambda m: m[0].replace(" ", "\0"), text), False)
        return mnemonic, [o.replace("\0", " ") for o in ops], [t.replace("\0", " ") for t in suffix]
    if " :: " in text:  # VOPD: two instructions; the second's mnemonic is kept as a fixed operand ":: name"
        left, right = text.split(" :: ", 1)
        m1, ops1, _ = split_text(left, free_form)
        m2, ops2, sfx2 = split_text(right, free_form)
        return m1, ops1 + [":: " + m2] + ops2, sfx2
    mnemonic, _, rest = text.partition(" ")
    ops = split_operands(rest)
    suffix: list[str] = []
    if ops and not free_form:
        parts, depth, cur = [], 0, ""
        for ch in ops[-1]:
            depth += ch in "(["
            depth -= ch in ")]"
            if ch == " " and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        ops[-1] = parts[0]
        suffix = [p for p in parts[1:] if p]
        if ops[-1] == "" or _is_suffix(ops[-1]):
            suffix.insert(0, ops.pop())
    return mnemonic, ops, suffix


def _is_suffix(tok: str) -> bool:
    return re.match(r"^[a-z_0-9]+:", tok) is not None


def strip_mods(tok: str) -> tuple[str, bool, bool]:
    """(register text, negated, abs) of a source token like -|v1| (SDWA's sext(v1) counts as neither)."""
    if tok.startswith("sext(") and tok.endswith(")"):
        tok = tok[5:-1]
    neg = tok.startswith("-") and not tok[1:2].isdigit()
    if neg:
        tok = tok[1:]
    ab = tok.startswith("|") and tok.endswith("|")
    if ab:
        tok = tok[1:-1]
    return tok, neg, ab


class Prober:
    """Batches probe words for one target through llvm-mc-19."""

    def __init__(self, target: str):
        self.target = target
        self.encs = encodings_for(target)

    def claims(self, head: int) -> Encoding | None:
        return match(self.encs, head)

    def word(self, enc: Encoding, values: dict[str, int], literal: int = PROBE_LITERAL) -> bytes:
        v = 0
        for f in enc.fields:  # zero values set no bits: they must not clear an overlapping field's (DS offset)
            if values.get(f.name):
                v = f.put(v, values[f.name])
        v |= enc.match
        if enc.when:
            v = next(e for e in self.encs if e.when is None and e.match == enc.match).by_name[enc.when[0]].put(
                v, enc.when[1])
        return v.to_bytes(enc.size, "little") + literal.to_bytes(4, "little")

    def run(self, words: list[bytes]) -> list[str | None]:
        res = disassemble(self.target, words)
        return [r[0] if r and r[0] != CRASHED and not annotated_invalid(r[0]) else None for r in res]


def base_values(enc: Encoding) -> tuple[dict[str, int], dict[str, int]]:
    """Probe values of every field (0 for immediates and flags) and the register number each register field shows."""
    values: dict[str, int] = {}
    regnum: dict[str, int] = {}
    numbers = iter((16, 32, 48, 64, 80, 96, 112, 128, 144))
    used = 0
    plain = 0  # bits of the fields that are no register: modifiers a register number must not switch on
    for f in enc.fields:
        if f.kind == "op" or f.kind not in REG_KINDS:
            plain |= ((1 << f.width) - 1) << f.lo
    for f in enc.fields:
        bits = ((1 << f.width) - 1) << f.lo
        if f.kind == "op" or f.kind not in REG_KINDS:
            values[f.name] = 0
            continue
        if bits & (used | plain):  # overlaps another field (VOP3's sdst over abs/op_sel): 0 keeps that one clear
            n = 0
        else:
            n = next(numbers)
            used |= bits
        regnum[f.name] = n + 1 if f.kind == "vdsty" else n  # VOPD's vdstY: (value << 1) | !(vdstX & 1)
        values[f.name] = {"src": 256 + n, "sbase": n >> 1, "srsrc": n >> 2, "vdsty": n >> 1}.get(f.kind, n)
    return values, regnum


def candidates(enc: Encoding, base: dict[str, int]) -> list[dict[str, int]]:
    """The base probe, then the base with ever more register fields zeroed (fewest first)."""
    regs = [f.name for f in enc.fields if f.kind in REG_KINDS and base.get(f.name)]
    kinds = {f.name: f.kind for f in enc.fields}
    out = []
    for n in range(len(regs) + 1):
        for zeroed in itertools.combinations(regs, n):
            choices = [(124, 125, 127, 0) if kinds[name] == "sreg" else (base[name] - 256, 0) if kinds[name] == "src"
                       else (0,) for name in zeroed]  # an SGPR source, or null/off, before 0
            for values in itertools.product(*choices):  # an SGPR field may need null (124/125) or 0x7f to be off
                out.append({**base, **dict(zip(zeroed, values, strict=True))})
    return out


def parse_register(tok: str) -> tuple[str, int, int] | None:
    m = _REG.match(tok)
    if not m:
        return None
    if m.group(2) is not None:
        return m.group(1), int(m.group(2)), 1
    lo, hi = int(m.group(3)), int(m.group(4))
    return m.group(1), lo, hi - lo + 1


def learn_class(texts: list[str | None], lits: Iterable[int]) -> str:
    """The constant class (operands.CLASSES) reproducing LLVM's texts for _CONSTS then _LITS (most matches)."""
    want = list(texts)
    best, best_score = "i32", -1
    for cls in CLASSES:
        got = [constant_text(c, cls) for c in _CONSTS] + [literal_text(x, cls) for x in lits]
        score = sum(1 for a, b in zip(got, want, strict=True) if a == b)
        if score > best_score:
            best, best_score = cls, score
    return best


def learn_imm(values: Iterable[int], texts: list[str | None], width: int, ctx: dict | None = None) -> str:
    """The immediate format (decoder.IMM_FORMATS) that reproduces LLVM's texts for the probe values."""
    vals = list(values)
    best, best_score = "dec", -1
    for name in IMM_FORMATS:
        score = 0
        for v, t in zip(vals, texts, strict=True):
            try:
                score += render_imm(name, v, width, ctx or CTX) == t
            except (KeyError, ValueError, IndexError):
                pass
        if score > best_score:
            best, best_score = name, score
    return best


def learn_encoding(p: Prober, enc: Encoding, log: Callable[[str], None]) -> dict[str, dict]:
    """Every opcode of one encoding: {key: entry} (see decoder.Opcode for the entry's meaning)."""
    base, regnum = base_values(enc)
    keyfields = [enc.by_name[k] for k in enc.keys]
    keys = [0]
    shift = 0
    for kf in keyfields:
        keys = [k | (v << shift) for v in range(1 << kf.width) for k in keys]
        shift += kf.width

    def keyvals(k: int) -> dict[str, int]:
        out, s = {}, 0
        for kf in keyfields:
            out[kf.name] = (k >> s) & ((1 << kf.width) - 1)
            s += kf.width
        return out

    # 1. a valid probe per key
    words, owners = [], []
    for k in keys:
        for cand in candidates(enc, base):
            vals = {**cand, **keyvals(k)}
            w = p.word(enc, vals)
            if p.claims(int.from_bytes(w[:8], "little")) is not enc:
                break
            if int.from_bytes(w[:4], "little") == MARKER_WORD:
                continue
            words.append(w)
            owners.append((k, vals))
    texts = p.run(words)
    found: dict[int, tuple[dict[str, int], str]] = {}
    for (k, vals), t in zip(owners, texts, strict=True):
        if t is not None and k not in found and not t.startswith("v_illegal"):
            found[k] = (vals, t)
    free_form = enc.name in ("SOPP", "SOPK")
    entries: dict[str, dict] = {}
    plans = []  # (key, field, value) variant probes
    for k, (vals, text) in found.items():
        mnemonic, items, _ = template(text, vals, regnum, free_form)
        entry: dict = {"m": mnemonic, "o": items, "z": [], "s": [], "w": [], "alt": []}
        entries[str(k)] = entry
        used = {it[1] for it in items if it[0] == "r"}
        used_bits = 0
        for name in used:
            used_bits |= _mask(enc.by_name[name])
        for f in enc.fields:
            if f.name in enc.keys or (f.name not in used and _mask(f) & used_bits):
                continue  # a field under one the opcode shows (VOP3's abs/op_sel under sdst) is not its own
            if f.name not in used:
                plans += [(k, f.name, v) for v in _variant_values(f)]
            elif f.kind == "sreg":
                plans += [(k, f.name, v) for v in (124, 125, 126, 127)]
            elif f.kind == "vgpr":
                plans += [(k, f.name, v) for v in (128, 255)]
            elif f.kind == "src":
                plans += [(k, f.name, v) for v in (256 + 128, 511)]
        if any(it[0] == "l" for it in items):
            plans += [(k, "__lit__", ("lit", lit)) for lit in _LITS]
        for it in items:
            if it[0] == "r" and enc.by_name[it[1]].kind in ("src", "ssrc"):
                plans += [(k, it[1], ("c", c)) for c in _CONSTS]
                plans += [(k, it[1], ("lit", lit)) for lit in _LITS]
    # 2. variants
    words = []
    for k, name, v in plans:
        vals = dict(found[k][0])
        lit = PROBE_LITERAL
        if name == "__lit__":
            lit = v[1]
        elif isinstance(v, tuple):
            vals[name] = v[1] if v[0] == "c" else 255
            lit = v[1] if v[0] == "lit" else PROBE_LITERAL
        else:
            vals[name] = v
        words.append(p.word(enc, vals, lit))
    texts = p.run(words) if words else []
    per: dict[tuple[int, str], list] = {}
    for (k, name, v), t in zip(plans, texts, strict=True):
        per.setdefault((k, name), []).append((v, t))
    for (k, name), results in per.items():
        if name == "__lit__":
            entry = entries[str(k)]
            j = next(i for i, it in enumerate(entry["o"]) if it[0] == "l")
            texts = [(split_text(t, free_form)[1] + [None] * 9)[j] if t else None for _, t in results]
            entry["o"][j][1] = learn_class([None] * len(_CONSTS) + texts, _LITS)
            continue
        _learn_field(enc, entries[str(k)], found[k], regnum, name, results, free_form)
    # 3. fields that change the operand list together (MUBUF idxen+offen+tfe, FLAT saddr=off with glc): every
    # combination of two or more of them
    order = [f.name for f in enc.fields]
    combos = []
    for k, entry in entries.items():
        singles = sorted({(a[0][0], a[1][0]) for a in entry["alt"] if len(a[0]) == 1},
                         key=lambda nv: (order.index(nv[0]), nv[1]))
        for n in range(2, len(singles) + 1):
            for sub in itertools.combinations(singles, n):
                if len({name for name, _ in sub}) == n:
                    combos.append((k, [name for name, _ in sub], [v for _, v in sub]))
    combos = combos[:20000]
    words = [p.word(enc, {**found[int(k)][0], **dict(zip(names, vs, strict=True))}) for k, names, vs in combos]
    for (k, names, vs), t in zip(combos, p.run(words) if words else [], strict=True):
        if t is not None:
            vals = {**found[int(k)][0], **dict(zip(names, vs, strict=True))}
            mnem, items, _ = template(t, vals, regnum, free_form)
            entries[k]["alt"].insert(0, [names, vs, mnem, items])
    for entry in entries.values():  # most specific first
        entry["alt"].sort(key=lambda a: -len(a[0]))
    # 4. fixed tokens that still hold a number or register (SMEM's offset once soffset is null, gfx9 SMEM's SGPR
    # offset, s_sendmsg_rtn's message): find the field by changing each field not shown, one at a time
    plans4 = []
    for k, entry in entries.items():
        lists = [(None, {}, entry["o"])] + [(ai, dict(zip(a[0], a[1], strict=True)), a[3])
                                            for ai, a in enumerate(entry["alt"])]
        for ai, fixed, items in lists:
            if not any(it[0] == "t" and _numberlike(it[1]) for it in items):
                continue
            shown = {it[1] for it in items if it[0] in ("r", "i")} | set(fixed) | set(enc.keys)
            shown_bits = 0
            for name in shown:
                shown_bits |= _mask(enc.by_name[name])
            vals = {**found[int(k)][0], **fixed}
            for f in enc.fields:
                if f.name in shown or _mask(f) & shown_bits:
                    continue
                for v in (0x11, 0x1234 & ((1 << f.bits) - 1), 0x25 & ((1 << f.bits) - 1)):
                    plans4.append((k, ai, f, v, p.word(enc, {**vals, f.name: v})))
    texts4 = p.run([w for *_, w in plans4]) if plans4 else []
    got: dict[tuple[str, object, str], list] = {}
    for (k, ai, f, v, _), t in zip(plans4, texts4, strict=True):
        got.setdefault((k, ai, f.name), []).append((v, t))
    for (k, ai, name), res in got.items():
        items = entries[k]["o"] if ai is None else entries[k]["alt"][ai][3]
        if any(t is None for _, t in res):
            continue
        opss = [split_text(t, free_form)[1] for _, t in res]
        if any(len(o) != len(items) for o in opss):
            continue
        f = enc.by_name[name]
        for j, it in enumerate(items):
            if it[0] != "t" or not _numberlike(it[1]) or not all(o[j] != it[1] for o in opss):
                continue
            regs = [parse_register(o[j]) for o in opss]
            if all(r and r[0] == "s" for r in regs):
                items[j] = ["r", name, regs[0][2], None, "s"]
            else:
                fmt = learn_imm([0] + [v for v, _ in res], [it[1]] + [o[j] for o in opss], f.bits)
                items[j] = ["i", name, fmt]
    for entry in entries.values():
        _dedupe_suffix(entry)
        for key in ("z", "s", "w", "alt"):
            if not entry[key]:
                del entry[key]
    log(f"{p.target} {enc.name}: {len(entries)} opcodes")
    return entries


def template(text: str, vals: dict[str, int], regnum: dict[str, int], free_form: bool):
    """(mnemonic, operand items, suffix tokens) of a probe's text: each operand traced to the field it shows."""
    mnemonic, ops, suffix = split_text(text, free_form)
    items: list[list] = []
    for tok in ops:
        reg, _, _ = strip_mods(tok)
        r = parse_register(reg)
        item = None
        if r:
            letter, first, count = r
            for name, n in regnum.items():
                if n == first and (vals.get(name) or (n == 0 and letter == "s")):
                    item = ["r", name, count, None]
                    if letter == "s" and name.startswith("vdst"):  # a VALU writing an SGPR (v_readlane)
                        item.append("s")
                    elif letter == "a":  # gfx90a/gfx942 accumulation registers
                        item.append("a")
                    break
        if item is None and tok == f"0x{PROBE_LITERAL:x}":
            item = ["l", "i32"]
        if item is None and re.fullmatch(r"\d+|0x[0-9a-f]+", tok):
            for name, n in regnum.items():
                if vals.get(name) == n == int(tok, 0):
                    item = ["i", name, "u16"]
        items.append(item or ["t", tok])
    return mnemonic, items, suffix


def _mask(f) -> int:
    m = ((1 << f.width) - 1) << f.lo
    if f.extra:
        m |= ((1 << f.extra[1]) - 1) << f.extra[0]
    return m


def _numberlike(tok: str) -> bool:
    """A fixed token that may really show a field: it holds a digit, or is `null` (an offset of 0 on gfx11)."""
    return (bool(re.search(r"\d", tok)) or tok == "null") and not tok.startswith("::")


def _variant_values(f) -> list[int]:
    if f.kind in REG_KINDS:
        return [1, 106, 124, 125, 126, 127] if f.kind == "sreg" else [1]
    if f.bits <= 4:
        return list(range(1, 1 << f.bits))
    mask = (1 << f.bits) - 1
    if f.bits <= 16:
        return sorted({v & mask for v in _IMM_PROBES} | {1 << i for i in range(f.bits)} | {mask})
    return sorted({1, 0x10, 0x1234, mask, 1 << (f.bits - 1), (1 << (f.bits - 1)) + 0x20, 0x7FF})


def _learn_field(enc: Encoding, entry: dict, found, regnum, name: str, results, free_form: bool) -> None:
    """Fold one field's variant results into the opcode entry."""
    f = enc.by_name[name]
    vals, base_text = found
    _, base_items, base_sfx = template(base_text, vals, regnum, free_form)
    src = [i for i, it in enumerate(entry["o"]) if it[0] == "r" and it[1] == name]
    consts = [(v, t) for v, t in results if isinstance(v, tuple)]
    results = [(v, t) for v, t in results if not isinstance(v, tuple)]
    if src and consts:  # a source operand's constants and literals
        texts = []
        for _, t in consts:
            ops = split_text(t, free_form)[1] if t is not None else []
            texts.append(ops[src[0]] if src[0] < len(ops) else None)
        entry["o"][src[0]][3] = learn_class(texts, _LITS)
        bad = {v[1] if v[0] == "c" else 255 for v, t in consts if t is None}
        for lo, hi in ((128, 208), (240, 248), (255, 255)):
            if any(lo <= b <= hi for b in bad):
                entry["z"].append([name, lo, hi])
    if src and f.kind in REG_KINDS:  # a register operand at special values: invalid, or another operand list
        for v, t in results:
            if t is None:
                entry["z"].append([name, v, v] if v not in (128, 256 + 128) else [name, v, v + 127])
            else:
                _, items, sfx = template(t, {**vals, name: v}, regnum, free_form)
                fields_of = [(it[0], it[1]) for it in items if it[0] != "t"]
                ops_t = split_text(t, free_form)[1]
                if fields_of != [(it[0], it[1]) for it in base_items if it[0] != "t"] and fields_of != [
                        (it[0], it[1]) for it in base_items if it[0] != "t" and it[1] != name] or \
                        len(items) != len(base_items) or ops_t.count("off") != base_text.count("off") or \
                        (src[0] < len(ops_t) and ops_t[src[0]] in ("off", "null")):
                    entry["alt"].append([[name], [v], split_text(t, free_form)[0], items])
        return
    invalid = [v for v, t in results if t is None]
    if invalid and len(invalid) == len(results):
        entry["z"].append([name, 1, (1 << f.bits) - 1])
    else:
        entry["z"] += [[name, v, v] for v in invalid]
    valid = [(v, t) for v, t in results if t is not None and t != base_text]
    if not valid:
        return
    if free_form and f.kind == "imm":
        base_ops = split_text(base_text, True)[1]
        pairs = [(v, split_text(t, True)[1]) for v, t in valid]
        n = len(base_ops)
        diff = {i for _, ops in pairs if len(ops) == n for i in range(n) if ops[i] != base_ops[i]}
        if n and len(diff) == 1:
            idx = diff.pop()
            texts = [base_ops[idx]] + [ops[idx] if len(ops) == n else "" for _, ops in pairs]
        else:
            idx = n
            texts = [""] + [ops[-1] if len(ops) > n else "" for _, ops in pairs]
        fmt = learn_imm([0] + [v for v, _ in pairs], texts, f.bits)
        if idx < n:
            entry["o"][idx] = ["i", name, fmt]
        else:
            entry["o"].append(["i", name, fmt])
        return
    sfx_by_value: dict[int, list[str]] = {0: base_sfx}
    for v, t in valid:
        mnem, items, sfx = template(t, {**vals, name: v}, regnum, free_form)
        ops = split_text(t, free_form)[1]
        base_ops = split_text(base_text, free_form)[1]
        same = items == base_items if f.bits == 1 else \
            [i for i in items if i[0] != "t"] == [i for i in base_items if i[0] != "t"]
        if not same or len(ops) != len(base_ops):
            if f.bits <= 3:  # a flag or small enum that changes the operands (MUBUF offen, gfx12 th, gfx90a acc)
                entry["alt"].append([[name], [v], mnem, items])
                sfx_by_value[v] = sfx
            continue
        for j, (a, b) in enumerate(zip(base_ops, ops, strict=True)):
            if a != b and v & (v - 1) == 0:
                kind = "abs" if b == f"|{a}|" else "neg" if b == f"-{a}" else "sext" if b == f"sext({a})" else None
                if kind:
                    entry["w"].append([name, v.bit_length() - 1, j, kind])
        sfx_by_value[v] = sfx
    if len(sfx_by_value) < 2:
        return
    common = set.intersection(*(set(x) for x in sfx_by_value.values()))
    own = {v: [t for t in sfx if t not in common] for v, sfx in sfx_by_value.items()}
    if not any(own.values()):
        return
    if f.bits <= 4:
        entry["s"].append(["e", name, {str(v): " ".join(t) for v, t in own.items() if t}])
        return
    toks = {v: t[0] for v, t in own.items() if len(t) == 1}
    if len(toks) < len(own) - 1:
        return
    prefixes = {t.split(":", 1)[0] for t in toks.values()}
    prefix = prefixes.pop() + ":" if len(prefixes) == 1 else ""  # "": the whole token is the format's (dpp_ctrl)
    nums = [(v, t[len(prefix):]) for v, t in toks.items()]
    fmt = learn_imm([v for v, _ in nums], [t for _, t in nums], f.bits)
    ok = sum(render_imm(fmt, v, f.bits, CTX) == t for v, t in nums)
    if ok == len(nums):  # a fifth element: printed at 0 too (gfx12 SMEM's offset:0x0)
        entry["s"].append(["n", name, prefix, fmt] + ([1] if 0 in toks else []))


def _dedupe_suffix(entry: dict) -> None:
    """Two fields printing the same prefix (DS offset vs offset0): keep the one whose probes all matched, widest."""
    seen: dict[str, int] = {}
    for i, spec in enumerate(entry["s"]):
        if spec[0] == "n":
            if spec[2] in seen:
                entry["s"][i] = None
            else:
                seen[spec[2]] = i
    entry["s"] = [s for s in entry["s"] if s]


# s_waitcnt counter fields per generation: (name, ((low bit, width), ...)), AMD ISA guides (SOPP S_WAITCNT);
# checked by the s_waitcnt probes of the tests.
WAITCNT = {
    "gfx9": (("vmcnt", ((0, 4), (14, 2))), ("expcnt", ((4, 3),)), ("lgkmcnt", ((8, 4),))),
    "gfx10": (("vmcnt", ((0, 4), (14, 2))), ("expcnt", ((4, 3),)), ("lgkmcnt", ((8, 6),))),
    "gfx11": (("vmcnt", ((10, 6),)), ("expcnt", ((0, 3),)), ("lgkmcnt", ((4, 6),))),
}
CTX: dict = {}


def generation(target: str) -> str:
    """The ISA generation whose layouts the target shares: gfx9, gfx10, or gfx11 (gfx12 too)."""
    return "gfx9" if target.startswith("gfx9") else "gfx10" if target.startswith("gfx10") else "gfx11"


def learn_context(p: Prober, sop1: dict[str, dict], sopk: dict[str, dict], sopp: dict[str, dict]) -> dict:
    """Register names (by value, for 1 and 2 registers), hwreg and sendmsg names, waitcnt layout of a target."""
    gen = generation(p.target)
    enc = {e.name: e for e in p.encs}
    ctx: dict = {"generation": gen, "waitcnt": WAITCNT[gen], "sendmsg_id_mask": 0xF if gen != "gfx11" else 0xFF}
    by_m = {e["m"]: int(k) for k, e in sop1.items()}
    sregs = {}
    for n, m in (("1", "s_mov_b32"), ("2", "s_mov_b64")):
        words = [p.word(enc["SOP1"], {"op": by_m[m], "sdst": 16, "ssrc0": v}) for v in range(255)]
        sregs[n] = [split_text(t, False)[1][1] if t else None for t in p.run(words)]
    ctx["sregs"] = sregs
    k = {e["m"]: int(k) for k, e in sopk.items()}["s_getreg_b32"]
    words = [p.word(enc["SOPK"], {"op": k, "sdst": 16, "simm16": (31 << 11) | i}) for i in range(64)]
    ctx["hwreg"] = {}
    for i, t in enumerate(p.run(words)):
        name = t.split("hwreg(", 1)[1].rstrip(")") if t and "hwreg(" in t else str(i)
        if name != str(i):
            ctx["hwreg"][str(i)] = name
    k = {e["m"]: int(k) for k, e in sopp.items()}["s_sendmsg"]
    words = [p.word(enc["SOPP"], {"op": k, "simm16": i}) for i in range(ctx["sendmsg_id_mask"] + 1)]
    ctx["sendmsg"] = {}
    for i, t in enumerate(p.run(words)):
        if t and "sendmsg(MSG_" in t:
            ctx["sendmsg"][str(i)] = t.split("sendmsg(", 1)[1].split(")")[0].split(",")[0]
    return ctx


def learn_target(target: str, log: Callable[[str], None]) -> dict:
    p = Prober(target)
    out: dict = {"target": target, "context": {}, "encodings": {}}
    CTX.clear()
    CTX.update({"generation": "gfx9", "waitcnt": WAITCNT["gfx9"], "sregs": {}, "hwreg": {}, "sendmsg": {},
                "sendmsg_id_mask": 0xF})
    first = {e.name: learn_encoding(p, e, log) for e in p.encs if e.name in ("SOP1", "SOPK", "SOPP")}
    CTX.update(learn_context(p, first["SOP1"], first["SOPK"], first["SOPP"]))
    out["context"] = dict(CTX)
    for enc in p.encs:
        out["encodings"][enc.name] = learn_encoding(p, enc, log)
    return out


def _dump(data: dict) -> str:
    """One opcode entry per line: small diffs when LLVM changes."""
    lines = ["{", f' "target": {json.dumps(data["target"])},', f' "context": {json.dumps(data["context"])},',
             ' "encodings": {']
    encs = list(data["encodings"].items())
    for i, (name, table) in enumerate(encs):
        lines.append(f'  {json.dumps(name)}: {{')
        items = list(table.items())
        for j, (k, e) in enumerate(items):
            sep = "," if j < len(items) - 1 else ""
            lines.append(f"   {json.dumps(k)}: {json.dumps(e, separators=(',', ':'))}{sep}")
        lines.append("  }" + ("," if i < len(encs) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def relearn(target: str, names: set[str], log: Callable[[str], None]) -> dict:
    """The target's table as written, with the encodings `names` learnt again (or for the first time): the
    context is the table's own, its generation derived from the target."""
    data = json.loads((HERE / f"{target}.json").read_text())
    p = Prober(target)
    CTX.clear()
    CTX.update({**data["context"], "generation": generation(target)})
    data["context"] = dict(CTX)
    data["encodings"] = {e.name: learn_encoding(p, e, log) if e.name in names else data["encodings"][e.name]
                         for e in p.encs if e.name in names or e.name in data["encodings"]}
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", default=list(TARGETS))
    ap.add_argument("--only", help="comma-separated encodings to learn again, the rest of each table kept as it is "
                                   "(a whole target's probing takes hours)")
    args = ap.parse_args(argv)
    for t in args.targets:
        log = lambda s: print(s, file=sys.stderr)  # noqa: E731
        data = relearn(t, set(args.only.split(",")), log) if args.only else learn_target(t, log)
        (HERE / f"{t}.json").write_text(_dump(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
