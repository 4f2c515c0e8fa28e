// ipx (the sharp-based image server Nuxt Image uses) on 127.0.0.1, serving one folder, for
// benchmarks/threeway.py. Cold: sharp's libvips operation cache off, and ipx keeps no results.
//
//   node benchmarks/ipx_server.cjs <modules folder> <image folder> <port>
"use strict";
const http = require("node:http");
const path = require("node:path");

const [modules, dir, port] = process.argv.slice(2);
const sharp = require(path.join(modules, "sharp"));
const { createIPX, createIPXNodeServer, ipxFSStorage } = require(path.join(modules, "ipx"));

sharp.cache(false);
const ipx = createIPX({ storage: ipxFSStorage({ dir }) });
const listener = createIPXNodeServer(ipx);
const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.end("ok");
    return;
  }
  listener(req, res);
});
server.keepAliveTimeout = 60000;
server.listen(Number(port), "127.0.0.1", () => {
  console.log(`ipx ${require(path.join(modules, "ipx/package.json")).version} on ${port}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => server.close(() => process.exit(0)));
