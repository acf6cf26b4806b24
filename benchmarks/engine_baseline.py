"""Engine baseline (issue 2): 200-execution unfiltered campaigns on 10 TF and
10 torch ops on registry-derived constraints; writes
benchmarks/engine_baseline.{json,md}.

    python benchmarks/engine_baseline.py [--budget 200] [--out runs/engine-baseline]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from acetest_ml.campaign import CampaignConfig, run_campaign
from acetest_ml.summary import format_table

TF_OPS = ["tf.raw_ops.Add", "tf.raw_ops.MatMul", "tf.raw_ops.BiasAdd", "tf.raw_ops.Conv2D",
          "tf.raw_ops.MaxPool", "tf.raw_ops.Softmax", "tf.raw_ops.Transpose", "tf.raw_ops.Tile",
          "tf.raw_ops.GatherV2", "tf.raw_ops.ConcatV2"]
TORCH_OPS = ["torch.ops.aten.add.Tensor", "torch.ops.aten.mm", "torch.ops.aten.matmul",
             "torch.ops.aten.conv2d", "torch.ops.aten.max_pool2d", "torch.ops.aten.softmax.int",
             "torch.ops.aten.transpose.int", "torch.ops.aten.cat", "torch.ops.aten.embedding",
             "torch.ops.aten.layer_norm"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/engine-baseline")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    cfg = CampaignConfig(apis=TF_OPS + TORCH_OPS, out=args.out, budget=args.budget, seed=args.seed,
                         jobs=args.jobs, timeout=10.0)
    t = time.time()
    summary = run_campaign(cfg, show_progress=True)
    wall = time.time() - t
    table = format_table(summary)
    print(table)
    here = os.path.dirname(os.path.abspath(__file__))
    result = {"budget": args.budget, "seed": args.seed, "wall_s": wall, "jobs": args.jobs,
              "apis": summary["apis"], "overall": summary["overall"]}
    with open(os.path.join(here, "engine_baseline.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(here, "engine_baseline.md"), "w") as f:
        f.write("# Engine baseline: unfiltered campaigns on registry-derived constraints\n\n")
        f.write(f"`python benchmarks/engine_baseline.py --budget {args.budget} --seed {args.seed}`"
                f" — {len(cfg.apis)} APIs, {args.jobs} workers, wall {wall:.0f} s.\n\n```\n")
        f.write(table + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
