"""The layout rules of ../shared/ARCHITECTURE.md, checked on the source: the command line is the only face, imports
run one way (no cycles), product files stay small, and ``--help`` loads neither torch nor Triton."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parents[1] / "ncsn_fast"
MAX_LINES = 450
# `python -m ncsn_fast.train` is kept as a thin alias of `python -m ncsn_fast.cli train` (docs/training.md): its
# `if __name__ == "__main__":` block is the one place outside ncsn_fast/cli that reaches the command line.
ALIAS = {"ncsn_fast.train"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    MODULES.update(out)
    return out


MODULES: set[str] = set()


def _imports(path: Path, top_level_only: bool) -> list[tuple[str, ast.AST]]:
    """(imported module, node) pairs; top_level_only: what runs at import time (not inside functions, not under
    TYPE_CHECKING, not in the __main__ block)."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, ast.AST]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if not top_level_only:
                    visit(child, False)
                continue
            if isinstance(child, ast.If) and top_level_only:
                test = ast.unparse(child.test)
                if "TYPE_CHECKING" in test or "__name__" in test:
                    continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                # `from pkg import submodule` depends on the submodule; `from module import name` on the module
                subs = [f"{child.module}.{a.name}" for a in child.names]
                known = [m for m in subs if m in MODULES]
                found.extend((m, child) for m in known)
                if len(known) < len(subs):
                    found.append((child.module, child))
            visit(child, top)

    visit(tree, True)
    return found


def test_only_the_command_line_imports_argparse_or_the_cli():
    offenders = []
    for name, path in _modules().items():
        if name.startswith("ncsn_fast.cli"):
            continue
        for module, node in _imports(path, top_level_only=False):
            if module.split(".")[0] in ("argparse", "unittest") or module.startswith("ncsn_fast.cli"):
                in_main_guard = name in ALIAS and module.startswith("ncsn_fast.cli")
                if not in_main_guard:
                    offenders.append(f"{name}:{node.lineno} imports {module}")
    assert not offenders, offenders


def test_no_import_cycles_among_product_modules():
    modules = _modules()
    graph = {
        name: {m for m, _ in _imports(path, top_level_only=True) if m in modules and m != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    cycles = []

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                dfs(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            dfs(name, [name])
    assert not cycles, cycles


def test_every_product_file_is_small():
    long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert not {n: k for n, k in long.items() if k > MAX_LINES}


def test_help_imports_neither_torch_nor_triton():
    code = (
        "import sys\n"
        "from ncsn_fast.cli import main\n"
        "for args in (['--help'], ['sample', '--help'], ['train', '--help'], ['fid', '--help'], ['doctor', '-h']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('LOADED', sorted(m for m in ('torch', 'triton', 'torchvision', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "LOADED []"


def test_sampling_loads_neither_dynamo_nor_inductor():
    """Issue 23's startup budget: a command that does not compile (here the bundled model sampled at 3
    evaluations through the CLI's own main) never imports torch._dynamo or torch._inductor (2 and 2.6 s of imports
    on this CPU); the compiled paths still work (tests/ops: torch.compile(fullgraph=True) against eager)."""
    code = (
        "import sys, tempfile\n"
        "from ncsn_fast.cli import main\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    main(['sample', '--nfe', '3', '--n', '2', '--out', d, '--quiet'])\n"
        "print('LOADED', sorted(m for m in ('torch._dynamo', 'torch._inductor', 'triton') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # as a user runs it
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "LOADED []", done.stdout[-500:]


def test_the_inference_network_loads_dynamo_only_to_compile():
    """``import ncsn_fast``, ``ncsn_fast.inference`` and an eager inference network (what every sampler runs on)
    import neither torch._dynamo nor torch._inductor: only ``compile=`` does."""
    code = (
        "import sys\n"
        "import ncsn_fast, ncsn_fast.inference\n"
        "import torch\n"
        "model = ncsn_fast.build_model(ncsn_fast.load_config({'model': {'ngf': 8}, 'data': {'image_size': 8}}))\n"
        "net = ncsn_fast.inference_network(model)\n"
        "net(torch.rand(2, 3, 8, 8), torch.tensor([0.5, 1.0]))\n"
        "print('LOADED', sorted(m for m in ('torch._dynamo', 'torch._inductor', 'triton') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "LOADED []", done.stdout[-500:]


def test_the_constant_marker_is_what_torch_compiler_sets():
    """ops/_backend.py marks has_kernel/triton_usable constant without importing torch._dynamo; if torch changes
    how assume_constant_result marks a function, this fails instead of torch.compile silently tracing them."""
    from ncsn_fast.ops import _backend

    def probe() -> bool:
        return True

    before = set(vars(probe))
    torch_marked = torch.compiler.assume_constant_result(probe)
    assert torch_marked is probe and set(vars(probe)) - before == {"_dynamo_marked_constant"}
    assert _backend.has_kernel._dynamo_marked_constant is True and _backend.triton_usable._dynamo_marked_constant


def test_the_shadowing_function_is_gone():
    import ncsn_fast.ops.langevin_step as m

    assert type(m).__name__ == "module" and hasattr(m, "langevin_step_")


def test_every_triton_launch_is_inside_a_device_guard():
    # Triton launches on the current CUDA device: a launch outside `with launch_device(t):` runs tensors of
    # cuda:1 on cuda:0 (no GPU needed to check where the launches are).
    unguarded, launches = [], 0
    for path in sorted((PACKAGE / "ops" / "triton").glob("*.py")):
        tree = ast.parse(path.read_text())
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.With) and any(
                isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id", "") == "launch_device"
                for item in node.items
            ):
                guarded |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "wrap_triton":
                launches += 1
                if id(node) not in guarded:
                    unguarded.append(f"{path.name}:{node.lineno}")
    assert launches >= 5 and not unguarded, unguarded
