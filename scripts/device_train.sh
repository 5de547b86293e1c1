#!/usr/bin/env bash
# Train learned-intra on a (remote) GPU machine in one detached process that outlives your
# login, taking snapshots to copy back. See docs/training.md, "Training on a GPU machine".
#
#   bash scripts/device_train.sh start  SECONDS [train options]   # install, launch, wait, snapshot
#   bash scripts/device_train.sh wait   SECONDS                   # wait, snapshot
#   bash scripts/device_train.sh finish                           # wait for the end, snapshot
#
# The trainer runs detached (setsid) in $RUN (/tmp/intra_gpu), so it keeps training between
# your commands. Each snapshot copies the checkpoint to $SNAPSHOT_DIR in 15 MiB parts plus the
# logs; back home: cat checkpoint.part.* > runs/intra_gpu/checkpoint.pt.
# DEVICE, PY, RUN and SNAPSHOT_DIR may be overridden (a CPU dry run: DEVICE=cpu
# PY=.venv/bin/python).
set -u
phase=${1:?start, wait or finish}
RUN=${RUN:-/tmp/intra_gpu}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
SNAPSHOT_DIR=${SNAPSHOT_DIR:-$RUN.snapshots}
mkdir -p "$SNAPSHOT_DIR"
if [ "$DEVICE" != cpu ] && [ ! -d /tmp/site/compressai ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 3; }
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1

snapshot() {
    [ -f $RUN/checkpoint.pt ] || { echo "no checkpoint yet"; return; }
    cp $RUN/checkpoint.pt $RUN.ck && split -b 15M -d $RUN.ck "$SNAPSHOT_DIR/checkpoint.part."
    cp $RUN/log.jsonl $RUN/val.jsonl "$SNAPSHOT_DIR/" 2>/dev/null
    tail -c 3000 $RUN.log > "$SNAPSHOT_DIR/train_tail.log"
    tail -n 3 $RUN.log
}
running() { pgrep -f "codecflow.training.image --run-dir $RUN" >/dev/null; }

case $phase in
start)
    secs=${2:?seconds to wait}; shift 2
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
    $PY -c "import torch, compressai; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 3
    running || setsid nohup $PY -m codecflow.training.image --run-dir $RUN --device $DEVICE \
        --data .train_pack --no-extra-data --val-dir .val_kodak --ckpt-every 120 "$@" \
        > $RUN.log 2>&1 < /dev/null &
    sleep "$secs"; snapshot ;;
wait)
    sleep "${2:?seconds to wait}"; snapshot ;;
finish)
    for _ in $(seq 1 110); do running || break; sleep 5; done
    running && pkill -TERM -f "codecflow.training.image --run-dir $RUN" && sleep 20
    snapshot ;;
*) echo "unknown phase $phase"; exit 2 ;;
esac
