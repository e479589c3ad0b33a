# Boot-storm helpers shared by the benchmarks (sourced; defines functions only).
#
#   storm_make_sets WORK CLONES MIB PIECES PIECE
#       The boot set: PIECES distinct PIECE-byte pieces of a MIB MiB image (seed 7);
#       writes WORK/storm-I.args (I = 1..CLONES), each the same set as qemu-io "read"
#       commands in an order of its own (seed 1000 + I).
#   storm_run WORK CLONES URL_FN QEMU_IO_FLAGS...
#       Runs every clone's reads in parallel (qemu-io QEMU_IO_FLAGS … "$(URL_FN I)",
#       output in WORK/client-I.log); prints the elapsed milliseconds; exits 1 (naming
#       the first failed client's log) if any client failed.

storm_make_sets() {
  python3 - "$2" "$3" "$4" "$5" "$1" <<'PY'
import random, sys
clones, mib, pieces, piece, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
boot = random.Random(7).sample(range((mib << 20) // piece), pieces)
for i in range(1, clones + 1):
    order = boot[:]
    random.Random(1000 + i).shuffle(order)
    with open(f"{work}/storm-{i}.args", "w") as f:
        f.write("\n".join(f"read {b * piece} {piece}" for b in order) + "\n")
PY
}

storm_run() {
  local work=$1 clones=$2 url_fn=$3 t0 i p fail=0 pids=()
  shift 3
  t0=$(( $(date +%s%N) / 1000000 ))
  for i in $(seq 1 "$clones"); do
    local args=() c
    while IFS= read -r c; do args+=(-c "$c"); done <"$work/storm-$i.args"
    qemu-io "$@" "${args[@]}" "$("$url_fn" "$i")" >"$work/client-$i.log" 2>&1 &
    pids+=("$!")
  done
  for p in "${pids[@]}"; do wait "$p" || fail=1; done
  if [ "$fail" != 0 ]; then
    echo "bench: a boot-storm client failed: $(grep -il error "$work"/client-*.log | head -1)" >&2
    exit 1
  fi
  echo $(( $(date +%s%N) / 1000000 - t0 ))
}
