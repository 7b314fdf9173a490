"""`ortprof sweep`: the workload once per cell of a matrix of ORT settings,
CPU and latency per cell, the Pareto front and a recommendation."""
