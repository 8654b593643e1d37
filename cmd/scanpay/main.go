// Command scanpay is the payment terminal daemon and its operator tools:
// run (the daemon), demo, check-config, report, orders, query, refund and
// version. main only wires the process to the CLI; build.go maps each
// config section onto its package, one function per part, and daemon.go
// runs the parts under one owner.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cli := &CLI{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Version: version}
	os.Exit(cli.Run(ctx, os.Args[1:]))
}
