"""vclab's import graph: `.venv/bin/python scripts/imports.py [src/vclab]`.

Prints the import cycles (imports inside functions count, TYPE_CHECKING-only ones do not), the
largest modules, every module over 600 lines, who imports Mininet, and how many vclab imports
sit inside functions (per module)."""
import ast
import pathlib
import sys
from collections import defaultdict
root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src/vclab")
mods = {}
for p in root.rglob("*.py"):
    rel = p.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__": parts = parts[:-1]
    mods[".".join(parts)] = p
def resolve(mod, is_pkg, node):
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = mod.split(".")
    if node.level:
        base = base if is_pkg else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module
    out = [prefix]
    for a in node.names:
        out.append(prefix + "." + a.name)
    return out
edges = defaultdict(set); mn = set(); fn_imports = defaultdict(int)
for mod, p in mods.items():
    tree = ast.parse(p.read_text())
    tc = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            for m in ast.walk(n): tc.add(id(m))
    funcs = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for m in ast.walk(n):
                if m is not n: funcs.add(id(m))
    for n in ast.walk(tree):
        if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in tc:
            names = resolve(mod, p.name == "__init__.py", n)
            if any(x.split(".")[0] == "mininet" for x in names): mn.add(mod)
            for x in names:
                while x and x not in mods: x = x.rpartition(".")[0]
                if x and x != mod and x.startswith("vclab"):
                    edges[mod].add(x)
                    if id(n) in funcs: fn_imports[mod] += 1
# package __init__ edges are implied; SCC by Tarjan
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
for v in list(mods): 
    if v not in idx: sc(v)
print(f"modules: {len(mods)}")
print(f"cycles (strongly connected groups): {len(sccs)}")
for s in sccs: print("  ", " <-> ".join(s))
sizes = sorted(((len(p.read_text().splitlines()), m) for m, p in mods.items()), reverse=True)
print("largest:", ", ".join(f"{m} {n}" for n, m in sizes[:5]))
print("over 600 lines:", [m for n, m in sizes if n > 600])
print("mininet importers:", sorted(mn))
print("function-level vclab imports:", sum(fn_imports.values()), dict(sorted(fn_imports.items())))
