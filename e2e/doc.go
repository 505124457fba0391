// Package e2e holds end-to-end tests: they build and start the real
// condamesh binary on loopback, upload packages made by condatest and by
// Debian's conda-package-handling (cph), and solve and download with a real
// conda client, rattler (npm @conda-org/rattler, pinned in package.json).
// `make test` (and .ci/run) installs the npm package and cph first.
package e2e
