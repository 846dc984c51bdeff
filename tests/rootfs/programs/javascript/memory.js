// Holds 1 GiB of touched memory, far above the run's limit.
const chunks = [];
for (let i = 0; i < 1024; i++) chunks.push(Buffer.alloc(1 << 20, 120));
console.log("allocated", chunks.length, "MiB");
