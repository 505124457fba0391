// solve.cjs: solve an environment with the real rattler solver (npm
// @conda-org/rattler, wasm) and print the solution as JSON on stdout.
//
//   node solve.cjs '<json: {"specs": [...], "channels": [...], "platforms": [...]}>'
//
// Exit status 0 with [{"name","version","build","filename","url","sha256","md5","size","subdir"}],
// or 1 with the solver's error on stderr.
const { simpleSolve } = require("@conda-org/rattler");

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
