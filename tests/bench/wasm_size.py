#!/usr/bin/env python3
"""Where a wasm file's bytes go, by crate: each function body's size as compiled and what gzip makes
of each group of crates alone and of the rest without it (so what leaving a group out would save on
the wire). Needs the wasm's name section (the tests' build keeps it: `cargo xtask test` writes
`$CARGO_TARGET_DIR/dist-test/`; the `dist` profile strips it).

    python3 tests/bench/wasm_size.py $CARGO_TARGET_DIR/dist-test/worker_bg.wasm [--depth N]
        [--leave-out REGEX]   (also: the code's gzip without every group REGEX matches)

No dependencies beyond the standard library."""

import argparse
import collections
import re
import zlib


def leb128(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def read(path):
    """The file's bytes, its function bodies as (offset, length) in index order after the imported
    functions, the function names by index, the number of imported functions and the sizes of the
    sections by name."""
    data = open(path, "rb").read()
    assert data[:4] == b"\0asm", f"{path} is not a wasm module"
    at, imported, bodies, names = 8, 0, [], {}
    sections = collections.Counter()
    kinds = {1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global", 7: "export",
             8: "start", 9: "element", 10: "code", 11: "data", 12: "data count"}
    while at < len(data):
        section = data[at]
        size, at = leb128(data, at + 1)
        end = at + size
        if section == 0:
            length, inner = leb128(data, at)
            name = data[inner:inner + length].decode()
            sections[f"custom {name}"] += size
            inner += length
            if name == "name":
                while inner < end:
                    sub = data[inner]
                    sub_size, inner = leb128(data, inner + 1)
                    if sub == 1:
                        count, entry = leb128(data, inner)
                        for _ in range(count):
                            index, entry = leb128(data, entry)
                            length, entry = leb128(data, entry)
                            names[index] = data[entry:entry + length].decode("utf8", "replace")
                            entry += length
                    inner += sub_size
        else:
            sections[kinds.get(section, str(section))] += size
            if section == 2:
                count, entry = leb128(data, at)
                for _ in range(count):
                    for _ in range(2):
                        length, entry = leb128(data, entry)
                        entry += length
                    kind = data[entry]
                    entry += 1
                    if kind == 0:
                        _, entry = leb128(data, entry)
                        imported += 1
                    elif kind == 1:
                        entry += 1
                        flags, entry = leb128(data, entry)
                        _, entry = leb128(data, entry)
                        if flags & 1:
                            _, entry = leb128(data, entry)
                    elif kind == 2:
                        flags, entry = leb128(data, entry)
                        _, entry = leb128(data, entry)
                        if flags & 1:
                            _, entry = leb128(data, entry)
                    elif kind == 3:
                        entry += 2
                    else:
                        raise ValueError(f"import kind {kind}")
            elif section == 10:
                count, entry = leb128(data, at)
                for _ in range(count):
                    length, entry = leb128(data, entry)
                    bodies.append((entry, length))
                    entry += length
        at = end
    return data, bodies, names, imported, sections


def crate_path(name, depth):
    """`cubecl_std::quant::view::run_with_q::h…` -> `cubecl_std` (depth 1), `cubecl_std::quant` (2)."""
    name = re.sub(r"^[<_&]+|^(mut |dyn )", "", name)
    name = re.sub(r"^[<&]+", "", name)
    return "::".join(name.split("::")[:depth])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wasm")
    parser.add_argument("--depth", type=int, default=1, help="path segments to group by (1: crate)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--leave-out", help="a regex of groups to leave out together (e.g. '^(cubecl|cubek)')")
    args = parser.parse_args()
    data, bodies, names, imported, sections = read(args.wasm)
    if not names:
        raise SystemExit("no name section: use the tests' build (dist-test), not the dist profile's")
    total = len(data)
    print(f"{args.wasm}: {total / 1e6:.2f} MB, {len(zlib.compress(data, 9)) / 1e6:.2f} MB as gzip")
    for name, size in sections.most_common(6):
        print(f"  section {name}: {size / 1e6:.2f} MB")
    groups = collections.defaultdict(list)
    for index, (offset, length) in enumerate(bodies):
        groups[crate_path(names.get(imported + index, "?"), args.depth)].append(data[offset:offset + length])
    code = b"".join(b for group in groups.values() for b in group)
    code_gz = len(zlib.compress(code, 9))
    print(f"code: {len(code) / 1e6:.2f} MB in {len(bodies)} functions, {code_gz / 1e6:.2f} MB as gzip")
    print(f"{'group':50} {'functions':>9} {'code MB':>8} {'gzip alone':>10} {'saved if left out':>17}")
    ranked = sorted(groups.items(), key=lambda item: -sum(map(len, item[1])))
    for name, group in ranked[:args.top]:
        raw = b"".join(group)
        rest = b"".join(b for other, g in groups.items() if other != name for b in g)
        saved = code_gz - len(zlib.compress(rest, 9))
        print(f"{name[:50]:50} {len(group):9} {len(raw) / 1e6:8.3f} {len(zlib.compress(raw, 9)) / 1e6:10.3f} "
              f"{saved / 1e6:17.3f}")
    if args.leave_out:
        pattern = re.compile(args.leave_out)
        left = [name for name in groups if pattern.search(name)]
        out = b"".join(b for name in left for b in groups[name])
        rest = b"".join(b for name, g in groups.items() if name not in left for b in g)
        rest_gz = len(zlib.compress(rest, 9))
        print(f"leaving out /{args.leave_out}/ ({len(left)} groups, {len(out) / 1e6:.2f} MB of code): "
              f"the rest {len(rest) / 1e6:.2f} MB, {rest_gz / 1e6:.2f} MB as gzip (saves {(code_gz - rest_gz) / 1e6:.2f})")


if __name__ == "__main__":
    main()
