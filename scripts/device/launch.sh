# launch.sh NAME STAGE SEED [extra igldt args...]: one training run in its own session (outlives the call).
name=$1; stage=$2; seed=$3; shift 3
mkdir -p /tmp/runs /tmp/meta; cd /tmp  # not the repo root: its igldt/ would shadow the assembled package
cmd="python3 -m igldt.cli.main train --stage $stage --preset camvid-cpu --device ${DEVICE:-cuda} -o train.seed=$seed -o train.val_every=200 -o train.attention_lr_mult=1 -o data.root=${DATA:-/tmp/camvid} --exist-ok --out /tmp/runs/$name $*"
echo "$cmd" > /tmp/meta/$name.cmd
setsid nohup bash -c "date +%s.%N > /tmp/meta/$name.start; OMP_NUM_THREADS=2 $cmd > /tmp/meta/$name.log 2>&1; echo \$? > /tmp/meta/$name.rc; date +%s.%N > /tmp/meta/$name.end" > /dev/null 2>&1 < /dev/null &
