const name = require("fs").readFileSync(0, "utf8").trim() || "world";
console.log(`hello, ${name}, from Node.js ${process.version}`);
