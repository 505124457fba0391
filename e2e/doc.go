// Package e2e holds end-to-end tests: they build and start the real
// condamesh binary on loopback, upload packages made by condatest and by
// Debian's conda-package-handling (cph), and solve and download with a real
// conda client, rattler (npm @conda-org/rattler, pinned in package.json).
// `make test` (and .ci/run) installs the npm package and cph first.
//
// rattler 0.3.5 under Node cannot read a response with a Content-Encoding,
// which the server sends to clients asking for gzip (repodata.json), so
// solve.cjs asks for identity; TestRepodataGzipClients checks the gzip
// path with curl --compressed and Python requests (python3-requests).
//
// attack_test.go and proxy_verify_test.go replay the attacks of issue 9
// against the binary as a black box: gzip bombs, credentials in answers
// and logs, the lean HTTP loop's odd requests against net/http, corrupt
// and unlisted upstream files, and random 404 paths against the Raft log.
package e2e
