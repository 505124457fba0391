// solve.cjs: solve an environment with the real rattler solver (npm
// @conda-org/rattler, wasm) and print the solution as JSON on stdout.
//
//   node solve.cjs '<json: {"specs": [...], "channels": [...], "platforms": [...], "noShards": false}>'
//
// Exit status 0 with {"solution": [{"name","version","build","filename","url","sha256","md5","size","subdir"}],
// "fetched": [every URL the solve asked for]}, or 1 with the solver's error on stderr.
//
// noShards makes every repodata_shards.msgpack.zst answer 404 without
// asking the server, as a channel without shards would: rattler then
// reads the whole-file repodata.json (or its .zst), as conda does.
const { simpleSolve } = require("@conda-org/rattler");

// Test-side workaround: @conda-org/rattler 0.3.5 under Node panics on any
// response with a Content-Encoding (Node's fetch has already decoded the
// body). The server answers repodata.json gzip-encoded to clients that ask
// for gzip, as Quetz and anaconda.org do, and real conda, mamba and pixi
// handle that; rattler asks for gzip when it falls back to repodata.json.
// So every request of this helper asks for identity (no effect on shards,
// .zst files or packages, which are never sent with a Content-Encoding).
//
// Second workaround: under Node, every concurrent fetch opens a connection
// of its own with no bound, and a solve over a large sharded channel asks
// for hundreds of shards at once; the server refuses a client's
// connections past its per-client cap (1,024). The Rust rattler bounds its
// gateway's concurrent requests (100 by default); so does this helper.
const realFetch = globalThis.fetch;
const maxInFlight = 100;
let inFlight = 0;
const waiting = [];
async function limited(fn) {
  while (inFlight >= maxInFlight) {
    await new Promise((resolve) => waiting.push(resolve));
  }
  inFlight++;
  try {
    return await fn();
  } finally {
    inFlight--;
    const next = waiting.shift();
    if (next) next();
  }
}
const fetched = [];
let noShards = false;
globalThis.fetch = (input, init = {}) => {
  const url = input instanceof Request ? input.url : String(input);
  fetched.push(url);
  if (noShards && url.endsWith("/repodata_shards.msgpack.zst")) {
    const absent = new Response(null, { status: 404 });
    Object.defineProperty(absent, "url", { value: url }); // rattler parses it
    return Promise.resolve(absent);
  }
  const headers = new Headers(init.headers || (input instanceof Request ? input.headers : undefined));
  headers.set("accept-encoding", "identity");
  return limited(() => realFetch(input, { ...init, headers }));
};

async function main() {
  const req = JSON.parse(process.argv[2]);
  noShards = !!req.noShards;
  const solved = await simpleSolve(req.specs, req.channels, req.platforms, []);
  const out = solved.map((p) => ({
    name: p.packageName,
    version: p.version,
    build: p.build,
    filename: p.filename,
    url: p.url,
    sha256: p.sha256,
    md5: p.md5,
    size: p.size === undefined ? null : Number(p.size),
    subdir: p.subdir,
  }));
  process.stdout.write(JSON.stringify({ solution: out, fetched }));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
