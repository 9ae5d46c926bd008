#!/bin/sh
# The whole lifecycle on the embedded demo data, with the very commands a user would type.
# Called by `make demo` (VPY = the venv's python, DEMO = the project directory, RECIPE = any *-demo recipe:
# `make demo RECIPE=uda-demo DEMO=demo-uda`). A recipe that holds out a domain (masf-demo,
# supervised-domains-demo) runs on the multi-domain demo images instead of the CIFAR-format demo.
set -e
VPY=${VPY:-.venv/bin/python}
DEMO=${DEMO:-demo-project}
RECIPE=${RECIPE:-mpl-demo}
M="$VPY -m mpltool --project $DEMO"
run() { echo "\$ mpltool --project $DEMO $*"; $M "$@"; }

DOMAINS=$($VPY -c "from mpltool.recipes import load_recipe; print(load_recipe('$RECIPE').target_domain)")
if [ -n "$DOMAINS" ]; then
  run data demo --domains --out "$DEMO/demo-domains"
  run data prepare --images "$DEMO/demo-domains" --recipe "$RECIPE"
else
  run data demo --out "$DEMO/demo-cifar"
  run data prepare --cifar "$DEMO/demo-cifar" --recipe "$RECIPE"
fi
run train --recipe "$RECIPE"
run eval
run freeze ckpt
if command -v atc >/dev/null 2>&1 || [ -n "${ASCEND_TOOLKIT_HOME:-}" ]; then
  run convert
else
  echo "(no atc on this machine: pre-checking the graph and printing the exact atc command instead)"
  run convert --check-only --soc Ascend910A
fi
run status
run report
