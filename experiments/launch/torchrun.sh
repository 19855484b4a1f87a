#!/usr/bin/env bash
# Launch `experiments.fit` with torchrun on one node or on several (run this same command on every node).
#
#   One node, 8 GPUs:
#     experiments/launch/torchrun.sh configs/sdm/ade20k.yaml
#   Two nodes x 8 GPUs (node 0 is the rendezvous host; on node 1 use NODE_RANK=1):
#     NNODES=2 NODE_RANK=0 MASTER_ADDR=node0.example.org experiments/launch/torchrun.sh configs/sdm/ade20k.yaml
#   Continue the newest run of that experiment after a crash (checkpoints on a filesystem all nodes share):
#     experiments/launch/torchrun.sh configs/sdm/ade20k.yaml --ckpt_path last
#
# Extra arguments go to the CLI (e.g. --data.init_args.batch_size=8). Lightning detects torchrun
# (TorchElasticEnvironment); the process count per node must equal trainer.devices, which this script enforces.
set -euo pipefail

CONFIG=${1:?usage: $0 CONFIG.yaml [CLI arguments...]}
shift
NNODES=${NNODES:-1}
NPROC_PER_NODE=${NPROC_PER_NODE:-8}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}

exec torchrun \
  --nnodes "$NNODES" --nproc_per_node "$NPROC_PER_NODE" --node_rank "$NODE_RANK" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  -m experiments.fit \
  --config "$CONFIG" --config configs/trainer/multinode.yaml \
  --trainer.devices "$NPROC_PER_NODE" --trainer.num_nodes "$NNODES" \
  "$@"
