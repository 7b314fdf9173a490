// A Node service calling onnxruntime-node (ORT's C API underneath), for the live tests:
//   node node_service.js MODEL THREADS SPINNING RATE SECONDS LOG
// creates one session (intraOpNumThreads THREADS, session.intra_op.allow_spinning SPINNING),
// runs it RATE times a second for SECONDS and appends each run's own latency to LOG as
// "run <ms>" (measured around the synchronous part of session.run), and its process CPU at the end.
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, threads, spinning, rate, seconds, log] = process.argv.slice(2);
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: Number(threads),
    extra: { session: { intra_op: { allow_spinning: spinning } } },
  });
  const x = new ort.Tensor('float32', new Float32Array(256 * 1024).fill(0.5), [256, 1024]);
  const end = Date.now() + Number(seconds) * 1000;
  const period = 1000 / Number(rate);
  const cpuStart = process.cpuUsage();
  const wallStart = process.hrtime.bigint();
  while (Date.now() < end) {
    const t0 = process.hrtime.bigint();
    await session.run({ x });
    // the run's ms and its start in CLOCK_MONOTONIC ns (hrtime), to compare with a window
    fs.appendFileSync(log, `run ${Number(process.hrtime.bigint() - t0) / 1e6} ${t0}\n`);
    const spent = Number(process.hrtime.bigint() - t0) / 1e6;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, period - spent)));
  }
  const cpu = process.cpuUsage(cpuStart);
  const wall = Number(process.hrtime.bigint() - wallStart) / 1e9;
  fs.appendFileSync(log, `cpu_pct ${(100 * (cpu.user + cpu.system) / 1e6 / wall).toFixed(2)}\n`);
}
main();
