// solve.cjs: solve an environment with the real rattler solver (npm
// @conda-org/rattler, wasm) and print the solution as JSON on stdout.
//
//   node solve.cjs '<json: {"specs": [...], "channels": [...], "platforms": [...]}>'
//
// Exit status 0 with [{"name","version","build","filename","url","sha256","md5","size","subdir"}],
// or 1 with the solver's error on stderr.
const { simpleSolve } = require("@conda-org/rattler");

// Test-side workaround: @conda-org/rattler 0.3.5 under Node panics on any
// response with a Content-Encoding (Node's fetch has already decoded the
// body). The server answers repodata.json gzip-encoded to clients that ask
// for gzip, as Quetz and anaconda.org do, and real conda, mamba and pixi
// handle that; rattler asks for gzip when it falls back to repodata.json.
// So every request of this helper asks for identity (no effect on shards,
// .zst files or packages, which are never sent with a Content-Encoding).
const realFetch = globalThis.fetch;
globalThis.fetch = (input, init = {}) => {
  const headers = new Headers(init.headers || (input instanceof Request ? input.headers : undefined));
  headers.set("accept-encoding", "identity");
  return realFetch(input, { ...init, headers });
};

async function main() {
  const req = JSON.parse(process.argv[2]);
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
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
