#!/bin/bash
# Stand-in for ONNX Runtime's build.sh (see tools/ci_build/build.py).
DIR="$( cd "$( dirname "${BASH_SOURCE[0]}" )" && pwd )"
python3 "$DIR/tools/ci_build/build.py" --build_dir "$DIR/build/Linux" "$@"
