// libuv's thread pool (fs and crypto work) and a worker thread.
const fs = require("fs");
const crypto = require("crypto");
const { Worker } = require("worker_threads");
let pending = 3;
const done = () => { if (--pending === 0) console.log("threads ok"); };
fs.readFile("/etc/passwd", (err) => { if (err) throw err; done(); });
crypto.pbkdf2("secret", "salt", 10000, 32, "sha256", (err) => { if (err) throw err; done(); });
new Worker("require('worker_threads').parentPort.postMessage(6 * 7)", { eval: true })
  .on("message", (m) => { if (m !== 42) throw new Error("worker"); done(); });
