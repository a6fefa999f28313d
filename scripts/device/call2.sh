# Call 2: the rest of the data, decoded to PNG; the Sup-only runs start (they need no teachers).
set -e
export PYTHONPATH=/tmp/shim:/tmp/site
cat /tmp/gpu/cv.aa .gpu/p2/cv.ab .gpu/p2/cv.ac > /tmp/cv.tar && sha256sum /tmp/cv.tar
mkdir -p /tmp/cvw && tar xf /tmp/cv.tar -C /tmp/cvw && python3 scripts/device/decode.py /tmp/cvw/camvid /tmp/camvid
for s in 0 1 2; do
  for it in ${SUP_ITERS:-1200 2400}; do  # section 20: 1200 2400; section 21: 600
    bash scripts/device/launch.sh sup${it}_s$s supervised $s -o train.iters=$it
  done
done
sleep 20; for f in /tmp/meta/*.log; do echo "$f: $(tail -c 100 $f)"; done
