// Package install checks the scanpay .deb as a shop installs it: Debian 12
// with systemd and udev booted in QEMU (amd64, and arm64 on -M virt and
// -M raspi3b), `apt install` of the freshly built package, then sales,
// watchdog, restarts, power cuts, the clock, upgrades and removal under the
// real unit.
//
// The suite (install_test.go) runs only from `make test-install`, which
// builds the images (image.sh) and the packages first; under plain
// `go test ./...` it skips. The package itself holds the one host-side
// service the guests need that is not a scanpay command: an SNTP responder
// the guests' systemd-timesyncd sets their clocks from.
package install
