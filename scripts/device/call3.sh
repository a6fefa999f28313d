# Call 3: the teachers; the students start; wait for every run (or the limit), pack the logs.
export PYTHONPATH=/tmp/shim:/tmp/site
mkdir -p /tmp/p3 && cp .gpu/p3/* /tmp/p3/
T="--teachers /tmp/p3/teachers.pt -o train.iters=${ITERS:-1200}"  # section 20: 1200; section 21: 600
for s in 0 1 2; do
  for v in ${VARIANTS:-student pool tru}; do
    case $v in
      student) bash scripts/device/launch.sh student_s$s student $s $T ;;
      pool) bash scripts/device/launch.sh pool_s$s student $s $T -o data.unlabelled_pool=labelled ;;
      tru) bash scripts/device/launch.sh tru_s$s student $s $T -o model.student.weights=/tmp/p3/tru_backbone.pt ;;
      soft) bash scripts/device/launch.sh soft_s$s student $s $T -o method.pseudo_targets=soft ;;
    esac
  done
done
runs=$(ls /tmp/meta/*.cmd | wc -l)
limit=${LIMIT:-480}; t0=$(date +%s)
while [ $(( $(date +%s) - t0 )) -lt $limit ]; do
  n=$(ls /tmp/meta/*.rc 2>/dev/null | wc -l); [ "$n" -ge "$runs" ] && break; sleep 5
done
echo "finished runs: $(ls /tmp/meta/*.rc | wc -l) after $(( $(date +%s) - t0 )) s"; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
for f in /tmp/meta/*.rc; do echo "$f $(cat $f)"; done
for r in /tmp/runs/*; do echo "$(basename $r): $(grep -h '"val"' $r/metrics.jsonl 2>/dev/null | tail -1 | cut -c1-90)"; done
cd /tmp && tar czf $OUT/results.tgz meta runs/*/metrics.jsonl && ls -la $OUT
