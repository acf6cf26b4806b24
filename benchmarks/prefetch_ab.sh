#!/bin/bash
# A/B: bug_finding baseline+filtered on 3 APIs, old (one round trip per candidate) vs new (prefetch in one round trip)
APIS=tf.raw_ops.DepthwiseConv2dNative,tf.raw_ops.RFFT,tf.raw_ops.ScatterNd
for v in old dev; do
  cd /work/wt/$v && PYTHONPATH=/work/wt/$v TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/bug_finding.py --time-budget 15 --train-time 20 --apis $APIS --arms baseline,filtered --out /tmp/ab_$v --report-dir /tmp/ab_${v}_rep > /tmp/ab_$v.log 2>&1
done
echo done > /tmp/ab.done
