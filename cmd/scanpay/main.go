// Command scanpay is the payment terminal daemon and its operator tools:
// run (the daemon), demo, check-config, report, orders, query, refund and
// version. Built without the nohq tag it is also head office (scanpay hq),
// installed as scanpay-hq; the lane's package is built with -tags nohq. main only wires the process to the CLI; build.go maps each
// config section onto its package, one function per part, and daemon.go
// runs the parts under one owner.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cli := &CLI{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Version: version}
	os.Exit(cli.Run(ctx, commandArgs(filepath.Base(os.Args[0]), os.Args[1:])))
}

// commandArgs lets the same program run as scanpay-hq, head office's
// build: "scanpay-hq run" is "scanpay hq run", and so on for hq's commands.
func commandArgs(name string, args []string) []string {
	if name != "scanpay-hq" {
		return args
	}
	if len(args) == 0 || args[0] == "run" || args[0] == "report" || args[0] == "open" || args[0] == "lanes" ||
		args[0] == "help" || args[0] == "--help" || args[0] == "-h" || args[0][0] == '-' {
		return append([]string{"hq"}, args...)
	}
	return args
}
