"""`ncsn-fast doctor`: the machine, the build of ncsn_fast._C, and every kernel present checked against the float64
reference on small odd shapes (library: ncsn_fast.doctor). Exit 1 naming the failing checks; ``--json FILE``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ncsn_fast.cli import common
from ncsn_fast.vocab import OP_BACKENDS


def register(sub: Any) -> None:
    d = sub.add_parser(
        "doctor",
        help="check this machine: versions, how the kernels were built, every op × backend × dtype × layout "
        "against the float64 reference, the bundled model on every backend (exit 1 on a failure)",
    )
    d.add_argument("--device", choices=["cpu", "cuda"], help="check one device only (default: every one present)")
    d.add_argument("--backend", help=f"comma-separated backends to check (default: all present; of {OP_BACKENDS})")
    d.add_argument("--op", help="comma-separated ops to check (default: instance_norm_pp_elu,sde_step_,langevin_step_)")
    d.add_argument("--no-model", action="store_true", help="skip the bundled model's forward")
    d.add_argument(
        "--compile",
        nargs="?",
        const="jit",
        choices=["jit", "aot", "both"],
        help="also check the compiled inference network (jit, the default of a bare --compile; aot; both) against "
        "eager on a tiny NCSNv2 and say which path is fastest here (a compile takes 10-60 s on a small CPU)",
    )
    d.add_argument("--seed", type=int, help="seed of the random inputs (default: fresh; printed with a failure)")
    d.add_argument("--json", metavar="FILE", help="also write every row, and the failures, to FILE as JSON")
    d.set_defaults(run=run, flag_names={"ops": "--op", "backends": "--backend"})


def _split(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def _print_row(row: Any) -> None:
    if row.ok is None:
        print(f"  {row.name:44s} {row.value}")
        return
    status = "ok  " if row.ok else "FAIL"
    err = f"{row.error:9.2e}" if row.error is not None else "        -"
    ms = f"{row.ms:9.3f} ms" if row.ms is not None else "           -"
    print(f"{status} {row.name:66s} {err} (tol {row.tolerance:.0e}) {ms}  {row.note}".rstrip(), flush=True)


def run(args: argparse.Namespace) -> int:
    json_path = common.check_output_file("--json", args.json, ".json") if args.json else None
    import torch

    if not torch.cuda.is_available():
        # No GPU: the Triton kernels are checked in Triton's interpreter, which must be chosen before they are defined
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from dataclasses import asdict

    from ncsn_fast import doctor

    if args.device == "cuda" and not torch.cuda.is_available():
        raise common.CommandError("--device: cuda requested but torch sees no CUDA GPU")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    start = time.perf_counter()
    print("ncsn-fast doctor")
    rows = doctor.run(
        devices=[args.device] if args.device else None,
        backends=_split(args.backend),
        ops=_split(args.op) or doctor.OPS,
        model=not args.no_model,
        seed=seed,
        progress=_print_row,
        compile={None: (), "both": ("jit", "aot")}.get(args.compile, (args.compile,)),
    )
    seconds = time.perf_counter() - start
    bad = doctor.failed(rows)
    checks = sum(r.ok is not None for r in rows)
    if json_path is not None:
        from ncsn_fast.io import write_json

        write_json(json_path, {"seed": seed, "seconds": round(seconds, 1), "checks": checks,
                               "failed": [r.name for r in bad], "rows": [asdict(r) for r in rows]})  # fmt: skip
    if not bad:
        print(f"doctor: all {checks} checks passed in {seconds:.0f} s" + (f"; wrote {json_path}" if json_path else ""))
        return common.EXIT_OK
    print(f"ncsn-fast doctor: {len(bad)} of {checks} checks FAILED (seed {seed}):", file=sys.stderr)
    for r in bad:
        why = r.note or f"relative error {r.error:.2e} > {r.tolerance:.0e}"
        print(f"  {r.name}: {why}", file=sys.stderr)
    return common.EXIT_FAILED
