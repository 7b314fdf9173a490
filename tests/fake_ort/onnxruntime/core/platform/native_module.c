/* Stand-in for ORT's native Python module: a few functions named like the
 * thread pool's, so symbol status (stripped/symtab/dwarf) can be checked. */
static volatile int spin_counter;

void SpinPause(void) { spin_counter++; }

int WorkerLoop(int rounds) {
  for (int i = 0; i < rounds; ++i) SpinPause();
  return spin_counter;
}

int PyInit_onnxruntime_pybind11_state(void) { return WorkerLoop(1); }
