#!/usr/bin/env bash
# Train learned-intra on a (remote) GPU machine in one detached process that outlives your
# login, taking snapshots to copy back. See docs/training.md, "Training on a GPU machine".
#
#   bash scripts/device_train.sh start   SECONDS [train options]  # install, launch, wait, snapshot
#   bash scripts/device_train.sh wait    SECONDS                  # wait, snapshot
#   bash scripts/device_train.sh finish                           # wait for the end, snapshot
#   bash scripts/device_train.sh run     SECONDS [train options]  # all in one command: train for
#                                                                 # SECONDS, then snapshot
#
# The trainer runs detached (setsid) in $RUN (/tmp/intra_gpu), so it keeps training between
# your commands. Each snapshot writes to $SNAPSHOT_DIR the checkpoint in 15 MiB parts and
# logs.tgz (the training log and its log.jsonl / val.jsonl, plus what `run` adds); back
# home: cat checkpoint.part.* > runs/intra_gpu/checkpoint.pt. `run` also runs the
# cross-device decoding check beside the training when .xdev/cases.msgpack is there
# (scripts/cross_device_check.py: it encodes those cases on this device and decodes them and
# every .xdev/coded_*.msgpack made elsewhere), and falls back to --amp off when the trainer
# dies in its first minute. DEVICE, PY, RUN and SNAPSHOT_DIR may be overridden (a CPU dry
# run: DEVICE=cpu PY=.venv/bin/python).
set -u
phase=${1:?start, run, wait or finish}
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
    rm -f "$SNAPSHOT_DIR"/checkpoint.part.*
    cp $RUN/checkpoint.pt $RUN.ck && split -b 15M -d $RUN.ck "$SNAPSHOT_DIR/checkpoint.part."
    mkdir -p $RUN.extra
    cp $RUN.log $RUN.extra/train.log
    cp $RUN/log.jsonl $RUN/val.jsonl $RUN.extra/ 2>/dev/null
    tar czf "$SNAPSHOT_DIR/logs.tgz" -C $RUN.extra .
    tail -n 3 $RUN.log
}
running() { pgrep -f "codecflow.training.image --run-dir $RUN" >/dev/null; }

launch() {
    setsid nohup $PY -m codecflow.training.image --run-dir $RUN --device $DEVICE \
        --data .train_pack --no-extra-data --val-dir .val_kodak --ckpt-every 120 "$@" \
        > $RUN.log 2>&1 < /dev/null &
}

cross_device_check() {
    [ -f .xdev/cases.msgpack ] || return 0
    mkdir -p $RUN.extra
    (timeout 300 $PY scripts/cross_device_check.py encode --cases .xdev/cases.msgpack \
        --device $DEVICE --out $RUN.extra/coded_$DEVICE.msgpack &&
     timeout 150 $PY scripts/cross_device_check.py decode --device $DEVICE \
        --coded $RUN.extra/coded_$DEVICE.msgpack $(ls .xdev/coded_*.msgpack 2>/dev/null) \
        --json $RUN.extra/decode_$DEVICE.json) > $RUN.extra/cross_device.log 2>&1
}

case $phase in
start)
    secs=${2:?seconds to wait}; shift 2
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
    $PY -c "import torch, compressai; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 3
    running || launch "$@"
    sleep "$secs"; snapshot ;;
run)
    secs=${2:?seconds of training}; shift 2
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
    rm -rf $RUN.extra; mkdir -p $RUN.extra
    launch "$@" --time-limit "$secs"
    cross_device_check &
    sleep 50
    if ! running && [ ! -f $RUN/checkpoint.pt ]; then
        echo "the trainer stopped in its first minute; again with --amp off"
        cp $RUN.log $RUN.extra/first_try.log
        launch "$@" --amp off --time-limit "$((secs - 60))"
    fi
    for _ in $(seq 1 $((secs / 5 + 12))); do running || break; sleep 5; done
    running && pkill -TERM -f "codecflow.training.image --run-dir $RUN" && sleep 15
    wait
    tail -n 12 $RUN.extra/cross_device.log 2>/dev/null
    snapshot ;;
wait)
    sleep "${2:?seconds to wait}"; snapshot ;;
finish)
    for _ in $(seq 1 110); do running || break; sleep 5; done
    running && pkill -TERM -f "codecflow.training.image --run-dir $RUN" && sleep 20
    snapshot ;;
*) echo "unknown phase $phase"; exit 2 ;;
esac
