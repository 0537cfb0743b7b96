"""Peak memory and time of weighted kNN over a large feature bank (``cgh.evaluate.knn.knn_evaluate``).

    python benchmarks/knn_memory.py                       # 1M x 512 bank, 2048 queries, chunks 64, 256, 1024
    python benchmarks/knn_memory.py --bank 200000 --queries 512 --chunks 128 --variant copy

Each configuration runs in a fresh Python process. Its peak resident set size is the kernel's high-water mark of the
process's RSS, ``VmHWM`` in ``/proc/self/status``, which sees every allocation (torch's included; tracemalloc does
not), reset through ``/proc/self/clear_refs`` once the bank exists, so that the peak is that of ``knn_evaluate``.
(``getrusage().ru_maxrss`` is not used: Linux carries the parent's high-water mark over fork and exec, so a child of
a big pytest process reports the parent's size.) Reported per configuration: RSS once the bank (N x D float32), its
labels and the queries exist, the peak during ``knn_evaluate`` and its time. The claim checked: the peak is the bank
plus O(chunk x N) (the (chunk, N) float32 similarity block), not O(queries x N) and not two banks.

``--variant copy`` reproduces the implementation before the fix (the bank was L2-normalised into a second N x D
tensor), for comparison. Results and the command: benchmarks/knn_memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

GiB = 1024**3


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:
    """VmHWM: the peak RSS of this process since it started or since ``reset_peak``."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(n: int, d: int, q: int, chunk: int, variant: str, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    from cgh.evaluate import knn

    torch.set_num_threads(threads)
    after_import = rss_bytes()
    gen = torch.Generator().manual_seed(0)
    bank = torch.empty(n, d)  # filled in slices: torch.randn(n, d) would hold a temporary of the same size
    for s in range(0, n, 65536):
        bank[s : s + 65536] = torch.randn(min(65536, n - s), d, generator=gen)
    bank_labels = torch.randint(0, 1000, (n,), generator=gen)
    queries = torch.randn(q, d, generator=gen)
    query_labels = torch.randint(0, 1000, (q,), generator=gen)
    with_bank = rss_bytes()
    peak_before = peak_bytes()
    reset = reset_peak()

    if variant == "copy":  # the implementation before the fix: a normalised copy of the whole bank
        def neighbours(bank, queries, k, chunk_size):
            bank = F.normalize(bank.float(), dim=1)
            for start in range(0, queries.shape[0], chunk_size):
                qq = F.normalize(queries[start : start + chunk_size].float(), dim=1)
                sim = torch.einsum(knn.SIMILARITY, qq, bank)
                top_sim, top_idx = sim.topk(k, dim=1)
                yield start, top_sim, top_idx

        knn._neighbours = neighbours

    start = time.perf_counter()
    result = knn.knn_evaluate(bank, bank_labels, queries, query_labels, 1000, chunk_size=chunk)
    seconds = time.perf_counter() - start
    return {"bank": n, "dim": d, "queries": q, "chunk": chunk, "variant": variant, "threads": threads,
            "rss_after_import": after_import, "rss_with_bank": with_bank, "peak_before_knn": peak_before,
            "peak_reset": reset, "peak": peak_bytes(), "seconds": seconds, "top1_k20": result[20]["top1"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bank", type=int, default=1_000_000, help="bank rows N")
    p.add_argument("--dim", type=int, default=512, help="feature dimension D")
    p.add_argument("--queries", type=int, default=2048, help="query rows Q")
    p.add_argument("--chunks", type=int, nargs="+", default=[64, 256, 1024], help="chunk sizes to run")
    p.add_argument("--variant", choices=("current", "copy"), nargs="+", default=["current"])
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.bank, args.dim, args.queries, args.chunks[0], args.variant[0], args.threads)))
        return

    print(f"bank {args.bank} x {args.dim} float32 = {args.bank * args.dim * 4 / GiB:.2f} GiB, {args.queries} "
          f"queries, k = 10, 20, 100, 200, 1000 classes, {args.threads} thread(s); RSS from /proc/self/statm, peak "
          f"from VmHWM in /proc/self/status, reset once the bank exists")
    print("| variant | chunk | bank | chunk x N block | RSS with bank | peak RSS | peak - RSS with bank | time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for variant in args.variant:
        for chunk in args.chunks:
            out = subprocess.run([sys.executable, __file__, "--child", "--bank", str(args.bank), "--dim",
                                  str(args.dim), "--queries", str(args.queries), "--chunks", str(chunk), "--variant",
                                  variant, "--threads", str(args.threads)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out)
            block = chunk * args.bank * 4
            print(f"| {variant} | {chunk} | {args.bank * args.dim * 4 / GiB:.2f} GiB | {block / GiB:.2f} GiB | "
                  f"{r['rss_with_bank'] / GiB:.2f} GiB | {r['peak'] / GiB:.2f} GiB | "
                  f"{(r['peak'] - r['rss_with_bank']) / GiB:.2f} GiB | {r['seconds']:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
