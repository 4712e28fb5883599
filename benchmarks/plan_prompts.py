"""Time and peak memory of reading and planning a large prompts file (not the inversion).

python benchmarks/plan_prompts.py --lines 10000 --ranks 8 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

from clip_inversion.data import plan, read_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompts.jsonl"
        rows = ({"id": f"p{i}", "prompt": f"a photo of a {i}th thing", "tags": ["bench"]} for i in range(args.lines))
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tracemalloc.start()
        start = time.perf_counter()
        prompts = read_prompts(path)
        batches = [plan(prompts, args.batch_size, args.ranks, rank) for rank in range(args.ranks)]
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    print(
        f"{args.lines} lines, {args.ranks} ranks x {args.batch_size}: {len(batches[0])} epochs planned for every "
        f"rank in {seconds:.3f} s, peak Python memory {peak / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
