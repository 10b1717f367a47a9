"""Writes tools/llama_server_flags.txt: every command-line flag the real `llama-server` accepts.

Usage: python3 tools/extract_llama_server_flags.py LLAMA_CPP/common/arg.cpp XLLAMACPP_VERSION > tools/llama_server_flags.txt

Reads llama.cpp's common/arg.cpp (the copy xllamacpp vendors in its PyPI sdist, under
thirdparty/llama.cpp/) and keeps the options `common_params_parser_init` adds for LLAMA_EXAMPLE_SERVER:
those whose examples include SERVER or COMMON and whose excludes do not name SERVER. Each flag is
written with the number of values it takes (0, 1 or 2), read from its handler's signature.
The shim (tools/llama_server_shim.py) refuses any other flag the way llama-server does.
"""

import re
import sys


def strip_comments(src):
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif src.startswith("//", i):
            i = src.find("\n", i)
            i = n if i < 0 else i
        elif src.startswith("/*", i):
            i = src.find("*/", i) + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching(src, i):
    """Index of the bracket closing the one at src[i] (strings skipped)."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack, j = [pairs[src[i]]], i + 1
    while stack:
        c = src[j]
        if c in "\"'":
            k = j + 1
            while src[k] != c:
                k += 2 if src[k] == "\\" else 1
            j = k
        elif c in pairs:
            stack.append(pairs[c])
        elif c in ")}]":
            if c != stack.pop():
                raise ValueError(f"unbalanced at {j}")
        j += 1
    return j - 1


def top_level_split(body):
    parts, depth, start, j = [], 0, 0, 0
    while j < len(body):
        c = body[j]
        if c in "\"'":
            k = j + 1
            while body[k] != c:
                k += 2 if body[k] == "\\" else 1
            j = k
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(body[start:j])
            start = j + 1
        j += 1
    parts.append(body[start:])
    return [p.strip() for p in parts]


def examples(chain, method):
    m = re.search(r"\." + method + r"\(\{([^}]*)\}\)", chain)
    return None if m is None else {e.strip() for e in m.group(1).split(",") if e.strip()}


def server_flags(src):
    src = strip_comments(src)
    flags = {}
    for m in re.finditer(r"add_opt\(common_arg\(", src):
        open_arg = m.end() - 1
        close_arg = matching(src, open_arg)
        close_add = matching(src, m.start() + len("add_opt"))
        args = top_level_split(src[open_arg + 1:close_arg])
        chain = src[close_arg + 1:close_add]
        ex = examples(chain, "set_examples") or {"LLAMA_EXAMPLE_COMMON"}
        excl = examples(chain, "set_excludes") or set()
        if not ({"LLAMA_EXAMPLE_SERVER", "LLAMA_EXAMPLE_COMMON"} & ex) or "LLAMA_EXAMPLE_SERVER" in excl:
            continue
        lam = args[-1]
        params = top_level_split(lam[lam.index("](") + 2:matching(lam, lam.index("](") + 1)])
        if len(params) == 1:
            values = 0
        elif len(params) == 2:
            values = 0 if params[1].startswith("bool") else 1
        else:
            values = 2
        names = re.findall(r'"([^"]+)"', args[0])
        if args[1].startswith("{"):  # negated spellings of a bool option
            names += re.findall(r'"([^"]+)"', args[1])
        for name in names:
            flags[name] = values
    return flags


def main(path, version):
    with open(path, encoding="utf-8") as f:
        flags = server_flags(f.read())
    print(f"# llama-server's flags (name, values taken), from xllamacpp {version}'s vendored llama.cpp")
    print("# common/arg.cpp (LLAMA_EXAMPLE_SERVER). Regenerate with tools/extract_llama_server_flags.py.")
    for name in sorted(flags):
        print(f"{name} {flags[name]}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
