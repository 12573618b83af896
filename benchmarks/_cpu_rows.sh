# Shared by the resumable CPU ablation scripts (bireal_cpu_ablation.sh, bonn_cpu_finetune.sh): sourced, not run.

done_epochs() {  # epochs finished in run folder $1 (0 if none), read from its metrics.csv
  if [ -f "$1/metrics.csv" ]; then echo $(( $(wc -l < "$1/metrics.csv") - 1 )); else echo 0; fi
}

wait_rows() {  # wait_rows OUT EPOCHS ROW...: wait for the runs in the array `pids`, print each row's progress
  local out=$1 epochs=$2 rc=0 p row; shift 2
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  for row in "$@"; do echo "$row: $(done_epochs "$out/$row") / $epochs epochs"; done
  return $rc
}
