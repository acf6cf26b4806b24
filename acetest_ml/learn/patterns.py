"""Error messages -> candidate rules, driven by the table in ``patterns.yaml``.

``candidates_from_message(spec, ai, message)`` cleans a framework's error
message, matches it against every family of its framework, resolves the
arguments the message names against the spec (names, ``In[0]``, ``Input 0``,
plural/singular, prefixes such as ``filter_tensor`` -> ``filter``) or, when
it names none, against the failing input (the tensor with the quoted shape,
the argument the rule rejects), and expands the family's templates into rule
expressions. Only expressions that the failing input *violates* are returned:
a rule the failing run already satisfies cannot explain its failure.
"""
from __future__ import annotations

import functools
import itertools
import os
import re
from dataclasses import dataclass
from typing import Callable, Optional

import yaml

from ..errors import ConfigError
from ..model import (BOOL, INT, INT_LIST, SHAPE, TENSOR, TENSOR_LIST, AbstractInput, ApiSpec,
                     TensorDesc)
from .evaluate import _elements, holds, value_of

PATTERNS_PATH = os.path.join(os.path.dirname(__file__), "patterns.yaml")

_TOKEN = (r"(?:`|')?(?:In\[\d+\]|[Ii]nput(?: tensor)? #?\d+|input\(\d+\)|argument #?\d+|"
          r"(?:[Ff]irst|[Ss]econd|[Tt]hird|[Ff]ourth) input|"
          r"[A-Za-z_][A-Za-z0-9_]*(?: [a-z_][a-z0-9_]*)?)(?:`|')?(?: tensors?)?")
_PLACEHOLDERS = {
    "{A}": f"(?P<arg>{_TOKEN})",
    "{B}": f"(?P<arg2>{_TOKEN})",
    "{N}": r"(?P<n>-?\d+|one|two|three|four|five|six)",
    "{M}": r"(?P<m>-?\d+|one|two|three|four|five|six)",
    "{SET}": r"(?P<set>\d+(?:-?D)?(?: \((?:un)?batched\))?(?:(?:,| or|, or| and) \d+(?:-?D)?)+)",
    "{SHAPE}": r"\[(?P<shape>[\d, ]*)\]",
    "{SHAPE2}": r"\[(?P<shape2>[\d, ]*)\]",
    "{GOT}": r"(?P<got>-?\d+)",
    "{XSHAPE}": r"(?P<shape>\d+(?:x\d+)*)",
    "{XSHAPE2}": r"(?P<shape2>\d+(?:x\d+)*)",
}
_KINDS = {
    "tensor": (TENSOR, TENSOR_LIST),
    "list": (INT_LIST, SHAPE),
    "int": (INT,),
    "bool": (BOOL,),
    "itensor": (TENSOR,),   # an integer tensor (paddings, perm, begin, block shapes)
    "shapetensor": (TENSOR,),  # an integer tensor that holds a shape (input_sizes, filter_sizes)
    "any": None,
}
#: words a message uses for "the (first) input tensor" rather than a name
_GENERIC = {"input", "self", "tensor", "inputs", "x", "a"}
#: words messages use for an argument of another name
_SYNONYMS = {"index": "indices", "biases": "bias"}
#: framework dtype spellings in messages -> canonical names
_DTYPE_WORDS = {
    "Bool": "bool", "bool": "bool", "Int": "int32", "Long": "int64", "Short": "int16",
    "Char": "int8", "Byte": "uint8", "Float": "float32", "Double": "float64", "Half": "float16",
    "BFloat16": "bfloat16", "ComplexFloat": "complex64", "ComplexDouble": "complex128",
    "UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64", "Int8": "int8",
    **{d: d for d in ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64",
                      "uint8", "complex64", "complex128")},
}
#: second words of a two-word argument phrase that describe the first ("axis tensor")
_DESCRIPTORS = {"tensor", "tensors", "value", "values", "argument", "attr", "attribute", "input"}
#: names of integer tensors whose values are a shape ("filter must be 4-dimensional"
#: of Conv2DBackpropFilter is about filter_sizes: its length)
_SHAPE_NAME = re.compile(r"(?:_sizes|_shape|^shape|^sizes?|_dims)$")
_ORDINALS = {"first": 0, "second": 1, "third": 2, "fourth": 3}
MAX_DIMS = 6
_WORD_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


@dataclass(frozen=True)
class Family:
    name: str
    frameworks: tuple
    kind: Optional[tuple]
    kind2: Optional[tuple]
    regexes: tuple
    rules: tuple
    ints: str = ""          # "int": {arg} is an integer tensor (its values are the point);
    #                         "shape": one whose values are a shape (input_sizes, filter_sizes, shape)


@dataclass(frozen=True)
class Candidate:
    expr: str
    family: str
    key: str          # the normalised message it came from
    strong: bool = True  # its arguments are named by the message (by name, shape or value), not guessed


def _literal(pattern: str) -> str:
    """The longest piece of plain text every match of ``pattern`` contains
    (outside groups, classes, placeholders and quantified characters), used
    to skip a regex whose text the message lacks; "" when there is none."""
    if "|" in re.sub(r"\(.|\((?:[^()]|\([^()]*\))*\)|\[[^\]]*\]", "", pattern):
        return ""  # a top-level alternative: nothing is mandatory
    p = pattern
    while True:  # nested groups, innermost first
        q = re.sub(r"\((?:[^()\\]|\\.)*\)[?*+]?(?:\{[^}]*\})?", "\x00", p)
        if q == p:
            break
        p = q
    p = re.sub(r"\[(?:[^\]\\]|\\.)*\][?*+]?", "\x00", p)
    p = re.sub(r"\{[A-Z0-9]+\}", "\x00", p)
    p = re.sub(r"\\.", "\x00", p)
    p = re.sub(r".[?*]|.\{[^}]*\}", "\x00", p)
    pieces = re.split(r"[\x00.^$+()\[\]{}|]", p)
    return max(pieces, key=len) if pieces else ""


def _compile(pattern: str, where: str) -> re.Pattern:
    p = pattern
    for k, v in _PLACEHOLDERS.items():
        p = p.replace(k, v)
    try:
        return re.compile(p)
    except re.error as e:
        raise ConfigError(f"{where}: bad pattern {pattern!r} ({e})") from None


@functools.lru_cache(maxsize=4)
def load_families(path: str = PATTERNS_PATH) -> tuple:
    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read message patterns ({e})") from None
    out = []
    for i, d in enumerate(doc.get("families") or []):
        where = f"{path}: families[{i}]"
        if not isinstance(d, dict) or not d.get("family") or not d.get("match") or not d.get("rules"):
            raise ConfigError(f"{where}: needs family, match and rules")
        kind = d.get("kind", "any")
        if kind not in _KINDS or d.get("kind2", "any") not in _KINDS:
            raise ConfigError(f"{where}: kind must be one of {sorted(_KINDS)}")
        out.append(Family(d["family"], tuple(d.get("fw") or ("tf", "torch")), _KINDS[kind],
                          _KINDS[d.get("kind2", "any")],
                          tuple((_literal(p), _compile(p, where)) for p in d["match"]), tuple(d["rules"]),
                          ints={"itensor": "int", "shapetensor": "shape"}.get(kind, "")))
    return tuple(out)


# --------------------------------------------------------------------------- messages

_NODE_RE = re.compile(r"\{\{function_node [^}]*\}\}\s*")
_OP_RE = re.compile(r"\s*\[Op:[^\]]*\].*$")


def clean_message(message: Optional[str]) -> str:
    """First meaningful line of an error message, without TensorFlow's
    ``{{function_node ...}}`` prefix and ``[Op:...] name:`` suffix."""
    m = _NODE_RE.sub("", (message or "").strip())
    lines = [ln.strip() for ln in m.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    return _OP_RE.sub("", first)[:400]


def message_key(message: Optional[str]) -> str:
    """A message with its numbers and shapes blanked: failures of one kind."""
    m = clean_message(message)
    m = re.sub(r"\[[^\]]*\]", "[]", m)
    m = re.sub(r"-?\d+", "#", m)
    return m[:160]


@functools.lru_cache(maxsize=512)
def _match_cached(message: str, framework: str) -> tuple:
    return tuple(_match(message, framework))


def match_message(message: str, framework: str) -> list[tuple[Family, dict]]:
    """Every (family, groups) whose patterns match ``message`` (cleaned)."""
    return [(f, dict(g)) for f, g in _match_cached(message, framework)]


def _match(message: str, framework: str) -> list[tuple[Family, dict]]:
    out = []
    for fam in load_families():
        if framework not in fam.frameworks:
            continue
        seen: list[dict] = []
        for lit, rx in fam.regexes:
            if lit and lit not in message:
                continue
            m = rx.search(message)
            if m:
                g = {k: v for k, v in m.groupdict().items() if v is not None}
                if g not in seen:  # every reading: "Shape must be rank 2" and "boxes must be 2-D"
                    seen.append(g)
                    out.append((fam, g))
    return out


# --------------------------------------------------------------------------- resolution

def _of_kind(spec: ApiSpec, kinds) -> list[str]:
    return [a.name for a in spec.args if kinds is None or a.kind in kinds]


def _tensor_args(spec: ApiSpec) -> list[str]:
    return [a.name for a in spec.args if a.kind in (TENSOR, TENSOR_LIST)]


def resolve_token(token: str, spec: ApiSpec, kinds) -> list[str]:
    """Argument names a message token may mean (best first)."""
    tok = re.sub(r"(?: tensors?)$", "", token.strip("`'")).strip("`'") or token.strip("`'")
    if " " in tok:
        # a two-word phrase: "Default value" -> default_value, "Sparse
        # indices" -> indices, "axis tensor" -> axis, "First input" -> #0
        first, last = tok.split(" ", 1)
        if first.lower() in _ORDINALS and last == "input":
            ts = _tensor_args(spec)
            i = _ORDINALS[first.lower()]
            return [ts[i]] if (kinds is None or TENSOR in kinds) and i < len(ts) else []
        # "filter_sizes input", "axis tensor": the first word names it
        tries = ([f"{first}_{last}", first, last] if last.lower() in _DESCRIPTORS
                 else [f"{first}_{last}", last])
        for t in tries:
            got = resolve_token(t, spec, kinds)
            if got:
                return got
        return []
    pos = re.fullmatch(r"(?:In\[|[Ii]nput(?: tensor)? #?|input\(|argument #?)(\d+)[\])]?", tok)
    tensors = _tensor_args(spec)
    if pos:
        i = int(pos.group(1))
        if kinds is None or TENSOR in kinds:
            return [tensors[i]] if i < len(tensors) else []
        return []
    names = _of_kind(spec, kinds)
    low = tok.lower()
    low = _SYNONYMS.get(low, low) if low not in {n.lower() for n in names} else low
    exact = [n for n in names if n.lower() == low]
    if exact:
        return exact
    plural = [n for n in names if n.lower().rstrip("s") == low.rstrip("s")
              or (low.endswith("es") and n.lower() == low[:-2])]
    if plural:
        return plural
    pref = [n for n in names if len(n) >= 3 and (low.startswith(n.lower() + "_")
                                                  or (len(low) >= 4 and n.lower().startswith(low)))]
    if pref:
        return pref[:1]
    # an abbreviated name: box_ind for "box_indices"
    abbr = [n for n in names if len(n) >= 5 and low.startswith(n.lower())]
    if abbr:
        return abbr[:1]
    # "indices" for a_indices, b_indices: every one of them (the learner
    # adopts the first its checks keep, the others on later failures)
    suffix = [n for n in names if len(low) >= 4 and n.lower().endswith("_" + low)]
    if suffix:
        return suffix
    if low in _GENERIC and (kinds is None or TENSOR in kinds) and tensors:
        return tensors  # "input": the first tensor, else the others
    return []


def _shape_of(text: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"-?\d+", text))


def _args_with_shape(ai: AbstractInput, spec: ApiSpec, shape: tuple) -> list[str]:
    out = []
    for name in _tensor_args(spec):
        v = ai.args.get(name)
        t = v if isinstance(v, TensorDesc) else (v[0] if isinstance(v, list) and v else None)
        if isinstance(t, TensorDesc) and tuple(t.shape) == shape:
            out.append(name)
    return out


def _int_elements(ai: AbstractInput, name: str) -> Optional[tuple]:
    """The elements of argument ``name`` when it is a small integer tensor."""
    v = ai.args.get(name)
    if not isinstance(v, TensorDesc) or not v.dtype.startswith(("int", "uint")):
        return None
    return _elements(v, ai.value_seed, name)


def _ints(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"(?<![\w-])-?\d+", text)]


def _quote_dtype(word: str) -> Optional[str]:
    d = _DTYPE_WORDS.get(word)
    return repr(d) if d else None


def _same_outer(a: str, b: str) -> str:
    """Equal rank and equal batch dimensions (all but the two innermost)."""
    return " and ".join([f"{a}.rank == {b}.rank"]
                        + [f"({a}.rank < {i + 3} or {a}.dim[{i}] == {b}.dim[{i}])" for i in range(MAX_DIMS - 2)])


#: flat elements of a small tensor a value macro names (evaluate.MAX_ELEMENTS);
#: items of a list (registry MAX_LIST)
VALUE_ITEMS = 16
LIST_ITEMS = 8


def _each(n: int, fn: Callable[[int], str]) -> str:
    return " and ".join(fn(i) for i in range(n))


def _permutation(p: str, n: str) -> str:
    """The elements of the 1-D tensor ``p`` are distinct and in [0, n): a
    permutation when ``p`` has n elements. Guarded by ``p``'s length, so the
    registry encoding (whose element variables exist past the length) agrees."""
    k = MAX_DIMS
    ranges = [f"({p}.dim[0] <= {i} or (0 <= {p}[{i}] and {p}[{i}] < {n}))" for i in range(k)]
    distinct = [f"({p}.dim[0] <= {j} or {p}[{i}] != {p}[{j}])" for i in range(k) for j in range(i + 1, k)]
    return " and ".join([f"{p}.rank == 1"] + ranges + distinct)


def _product_is_numel(shape: str, t: str, not_len: Callable[[int], str]) -> str:
    """The items of ``shape`` multiply to ``t``'s element count (dims past the
    rank are 1), or one of them is -1 and the others divide it: a reshape."""
    numel = " * ".join(f"{t}.dim[{i}]" for i in range(MAX_DIMS))
    out = []
    for k in range(MAX_DIMS + 1):
        items = [f"{shape}[{i}]" for i in range(k)]
        prod = " * ".join(items) if items else "1"
        alts = [f"{prod} == {numel}"]
        if items:
            alts.append(f"(({' or '.join(f'{x} == -1' for x in items)}) and -1 * {prod} > 0 "
                        f"and ({numel}) % (-1 * {prod}) == 0)")
        out.append(f"({not_len(k)} or {' or '.join(alts)})")
    return " and ".join(out)


def _diag_len(d: str, t: str, k: str) -> str:
    """``d`` holds diagonal ``k`` of the matrices of ``t``: ``t``'s batch dims
    and the diagonal's length min(M + min(k, 0), N - max(k, 0)) (M, N: the
    two inner dims); a band (``k`` of two elements) is left open."""
    m, n, kv = f"{t}.dim[-2]", f"{t}.dim[-1]", f"{k}.value"
    batch = " and ".join(f"({t}.rank < {i + 3} or {d}.dim[{i}] == {t}.dim[{i}])" for i in range(MAX_DIMS - 2))
    length = (f"(({kv} >= 0 and (({m} <= {n} - {kv} and {d}.dim[-1] == {m}) or ({m} >= {n} - {kv} and "
              f"{d}.dim[-1] == {n} - {kv}))) or ({kv} < 0 and (({m} + {kv} <= {n} and {d}.dim[-1] == {m} + {kv}) "
              f"or ({m} + {kv} >= {n} and {d}.dim[-1] == {n}))))")
    return f"({k}.rank >= 1 and {k}.dim[0] == 2) or ({d}.rank == {t}.rank - 1 and {batch} and {length})"


_MACROS: dict[str, Callable[..., str]] = {
    "diag_len": _diag_len,
    # values of small int tensors (flat elements) and list items
    "values_ge": lambda p, lo: _each(VALUE_ITEMS, lambda i: f"{p}[{i}] >= {lo}"),
    "values_ne": lambda p, c: _each(VALUE_ITEMS, lambda i: f"{p}[{i}] != {c}"),
    "values_in": lambda p, lo, hi: _each(VALUE_ITEMS, lambda i: f"{lo} <= {p}[{i}] and {p}[{i}] < {hi}"),
    "items_ge": lambda l, lo: _each(LIST_ITEMS, lambda i: f"{l}[{i}] >= {lo}"),
    "permutation": _permutation,
    # t's trailing dims are l's items (layer_norm: input [*, normalized_shape])
    "trailing_dims_from_list": lambda t, l: " and ".join(
        f"(len({l}) != {k} or ({t}.rank >= {k} and "
        + " and ".join(f"{t}.dim[{i - k}] == {l}[{i}]" for i in range(k)) + "))" for k in range(1, MAX_DIMS + 1)),
    # t's shape is l (weight of the same shape as normalized_shape)
    "shape_is_list": lambda t, l: f"{t}.rank == len({l}) and " + " and ".join(
        f"(len({l}) <= {i} or {t}.dim[{i}] == {l}[{i}])" for i in range(MAX_DIMS)),
    "product_is_numel": lambda l, t: _product_is_numel(l, t, lambda k: f"len({l}) != {k}"),
    "product_is_numel_tensor": lambda l, t: _product_is_numel(l, t, lambda k: f"{l}.dim[0] != {k}"),
    # the padded spatial dims divisible by the block (SpaceToBatch: int
    # block_size; SpaceToBatchND: block_shape, a list or a 1-D tensor)
    "padded_divisible_int": lambda t, p, b: _each(
        2, lambda i: f"({t}.dim[{i + 1}] + {p}[{2 * i}] + {p}[{2 * i + 1}]) % {b} == 0"),
    "padded_divisible_list": lambda t, p, b: _each(
        MAX_DIMS - 1, lambda i: f"(len({b}) <= {i} or ({t}.dim[{i + 1}] + {p}[{2 * i}] + {p}[{2 * i + 1}]) "
                                f"% {b}[{i}] == 0)"),
    "padded_divisible_tensor": lambda t, p, b: _each(
        MAX_DIMS - 1, lambda i: f"({b}.dim[0] <= {i} or ({t}.dim[{i + 1}] + {p}[{2 * i}] + {p}[{2 * i + 1}]) "
                                f"% {b}[{i}] == 0)"),
    # p[i] in [0, t.dim[i]] (begin of a slice)
    "values_le_dims": lambda p, t: _each(MAX_DIMS, lambda i: f"{p}[{i}] >= 0 and {p}[{i}] <= {t}.dim[{i}]"),
    # s[i] in [0, t.dim[i] - b[i]] (size of a slice that starts at b)
    "sizes_le_dims": lambda s, b, t: _each(
        MAX_DIMS, lambda i: f"{s}[{i}] >= 0 and {s}[{i}] <= {t}.dim[{i}] - {b}[{i}]"),
    # paddings [rank, 2]: both pads of dim i in [0, t.dim[i] - strict]
    "pad_le_dims": lambda p, t, strict: _each(
        MAX_DIMS, lambda i: f"{p}[{2 * i}] >= 0 and {p}[{2 * i}] <= {t}.dim[{i}] - {int(strict)} and "
                            f"{p}[{2 * i + 1}] >= 0 and {p}[{2 * i + 1}] <= {t}.dim[{i}] - {int(strict)}"),
    "same_shape": lambda a, b: " and ".join([f"{a}.rank == {b}.rank"]
                                            + [f"{a}.dim[{i}] == {b}.dim[{i}]" for i in range(MAX_DIMS)]),
    "square": lambda a: f"{a}.rank >= 2 and {a}.dim[-1] == {a}.dim[-2]",
    # t.dim[off + i] == l[i] for every item of l
    "dims_from_list": lambda t, l, off: " and ".join(
        f"(len({l}) <= {i} or {t}.dim[{int(off) + i}] == {l}[{i}])" for i in range(MAX_DIMS - int(off))),
    "in_rank": lambda i, t: f"({t}.rank == 0 and {i} in (-1, 0)) or (-{t}.rank <= {i} and {i} < {t}.rank)",
}


def _expand(template: str, env: dict) -> Optional[str]:
    def sub(m):
        key, _, default = m.group(1).partition("|")
        v = env.get(key)
        if v is None:
            v = default or None
        if v is None:
            raise KeyError(key)
        return str(v)
    try:
        text = re.sub(r"\{([a-z0-9_]+(?:\|[^}]*)?)\}", sub, template)
    except KeyError:
        return None
    if text.startswith("@"):
        m = re.fullmatch(r"@(\w+)(?:\((.*)\))?", text)
        if not m:
            return None
        if m.group(1) in ("same_rank_all", "same_outer_all"):
            ts = env.get("_tensors") or []
            if len(ts) < 2:
                return None
            if m.group(1) == "same_rank_all":
                return " and ".join(f"{ts[0]}.rank == {t}.rank" for t in ts[1:])
            return " and ".join(_same_outer(ts[0], t) for t in ts[1:])
        fn = _MACROS.get(m.group(1))
        if fn is None:
            return None
        params = [p.strip() for p in (m.group(2) or "").split(",") if p.strip()]
        try:
            return fn(*params)
        except TypeError:
            return None
    return text


def candidates_from_message(spec: ApiSpec, ai: AbstractInput, message: Optional[str],
                            framework: Optional[str] = None) -> list[Candidate]:
    """Rules that ``message`` (raised by ``ai``) states, each violated by ``ai``."""
    fw = framework or spec.framework
    text = clean_message(message)
    if not text:
        return []
    key = message_key(message)
    out: list[Candidate] = []     # arguments named by the message (or found by shape / value)
    weak: list[Candidate] = []    # arguments guessed: every one of the kind the rule rejects
    seen = set()
    tensors = _tensor_args(spec)
    for fam, groups in match_message(text, fw):
        env: dict = {"_tensors": tensors, "data": tensors[0] if tensors else None}
        env["data2"] = tensors[1] if len(tensors) > 1 else None
        for g in ("n", "m"):
            if g in groups:
                env[g] = _WORD_NUMBERS.get(groups[g]) or int(groups[g])
        if "got" in groups:
            got = int(groups["got"])
            env["got_rank"] = got + 1 if got >= 0 else -got
        if "set" in groups:
            vals = sorted(set(_ints(groups["set"].replace("D", " "))))
            if len(vals) < 2:
                continue
            env["set"] = ", ".join(str(v) for v in vals)
        if "dtype" in groups:
            q = _quote_dtype(groups["dtype"])
            if q is None:
                continue
            env["dtype"] = q
        # candidate argument names for {arg} and {arg2}
        arg_opts, strong1 = _arg_options(spec, ai, groups, "arg", "shape", fam.kind)
        arg2_opts, strong2 = _arg_options(spec, ai, groups, "arg2", "shape2", fam.kind2)
        good1 = set(arg_opts[:strong1])
        if fam.ints:
            arg_opts = [n for n in arg_opts if _int_elements(ai, n) is not None
                        and (fam.ints == "int" or _SHAPE_NAME.search(n))]
        good2 = set(arg2_opts[:strong2])
        uses2 = any("{arg2}" in r for r in fam.rules)
        for tmpl in fam.rules:
            opts1: list[Optional[str]] = list(arg_opts) or [None]
            opts2: list[Optional[str]] = (list(arg2_opts) or [None]) if uses2 else [None]
            for a, b in itertools.product(opts1, opts2):
                if a is not None and a == b:
                    continue
                if "{got_rank}" in tmpl and env.get("n") is not None:
                    t = ai.args.get(a) if a is not None else None
                    if not isinstance(t, TensorDesc) or t.rank != env["n"]:
                        continue  # the index was out of range of a tensor of rank n
                e = dict(env, arg=a, arg2=b)
                others = [t for t in tensors if t != a]
                e["data"] = others[0] if others else None      # the tensor {arg} relates to
                e["data2"] = others[1] if len(others) > 1 else None
                if fam.kind == (INT,) and e.get("data") is None:
                    continue
                strong = (a is None or a in good1 or not arg_opts) and (b is None or b in good2 or not arg2_opts)
                # {term_n}: a term of the failing input (another argument's
                # dim, rank or length) equal to the message's number: the
                # number may be a relation ("start must have length 2": as
                # long as shape)
                # ({term_n1}: equal to n - 1, "rank should be >= 7": one more than a length)
                # ({dimterm_n}: dims only, "cs_prev.dims(0) != batch_size: 1 vs. 2")
                n1 = "{term_n1}" in tmpl
                dims_only = "{dimterm_n}" in tmpl
                if "{term_n}" in tmpl or n1 or dims_only:
                    n = e.get("n")
                    terms: list[Optional[str]] = list(
                        _terms_equal(spec, ai, None if n is None else n - n1, exclude=(a, b)))
                    if dims_only:
                        terms = [t for t in terms if t is not None and ".dim[" in t]
                else:
                    terms = [None]
                for term in terms:
                    expr = _expand(tmpl, dict(e, term_n=term, term_n1=term, dimterm_n=term))
                    if expr is None or expr in seen:
                        continue
                    if holds(expr, ai):
                        continue  # the failing input already satisfies it: not the cause
                    seen.add(expr)
                    # every violated reading, best first: the learner adopts the
                    # first its checks keep and tries the next after a rejection
                    (out if strong else weak).append(Candidate(expr, fam.name, key, strong))
    return out + weak


def _terms_equal(spec: ApiSpec, ai: AbstractInput, n: Optional[int], exclude: tuple = ()) -> list[str]:
    """Terms of ``ai`` (tensor ranks, list lengths, then dims of arguments
    other than those in ``exclude``) whose value is ``n``."""
    if n is None:
        return []
    out: list[str] = []
    for a in spec.args:
        if a.name in exclude:
            continue
        v = ai.args.get(a.name)
        t = v if isinstance(v, TensorDesc) else None
        if t is not None:
            if t.rank == n:
                out.insert(0, f"{a.name}.rank")
            out += [f"{a.name}.dim[{k}]" for k in (0, 1, -1) if -t.rank <= k < t.rank and t.shape[k] == n]
        elif a.kind in (INT_LIST, SHAPE) and isinstance(v, list) and len(v) == n:
            out.insert(0, f"len({a.name})")
    return list(dict.fromkeys(out))


def _arg_options(spec: ApiSpec, ai: AbstractInput, groups: dict, g: str, shape_g: str,
                 kinds) -> tuple[list[str], int]:
    """Argument names for group ``g``, and how many of the first ones the
    message identifies (by name, shape or value): the rest are guesses."""
    if g in groups:
        generic = groups[g].strip("`'").lower() in _GENERIC
        names = resolve_token(groups[g], spec, kinds)
        if names:
            return names, 1 if generic else len(names)
    if shape_g in groups:
        got = _args_with_shape(ai, spec, _shape_of(groups[shape_g]))
        if got:
            return got, len(got)
    if "got" in groups and kinds is not None:
        v = int(groups["got"])
        if kinds == (INT,):
            hits = [n for n in _of_kind(spec, kinds) if ai.args.get(n) == v]
        else:
            hits = [n for n in _of_kind(spec, kinds) if value_of(f"{n}.value", ai) == v]
            # else a small int tensor holding it among its elements ("5 is out of range")
            # (or v - k: a negative index the op wrapped by a rank k first)
            for off in range(0, MAX_DIMS + 1):
                hits = hits or [n for n in _of_kind(spec, kinds) if v - off in (_int_elements(ai, n) or ())]
        if hits:
            return hits, len(hits)
    # not named (or a name the spec does not have): every argument of the
    # kind (the violation check picks, the learner's checks drop wrong ones)
    opts = _of_kind(spec, kinds) if kinds is not None else []
    return opts, (len(opts) if g not in groups else 0)
