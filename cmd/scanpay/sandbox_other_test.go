//go:build !(linux && (amd64 || arm64))

package main

// sandboxLaunch is a no-op where the seccomp launcher is not built.
func sandboxLaunch() {}
