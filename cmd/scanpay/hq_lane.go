//go:build nohq

package main

import (
	"context"
	"fmt"
)

// The lane's build (-tags nohq, as packaged for /usr/bin/scanpay) leaves
// head office out: NATS server and PostgreSQL client would double the
// binary a checkout Pi maps and pages in at every start.

func (c *CLI) hq(context.Context, []string) int {
	fmt.Fprintln(c.Stderr, "scanpay: head office is the scanpay-hq command (this build is the lane's): scanpay-hq run --config /etc/scanpay/hq.toml")
	return exitUsage
}

func (c *CLI) demoFleet(context.Context, []string) int {
	fmt.Fprintln(c.Stderr, "scanpay: the fleet demo is scanpay-hq demo-fleet (this build is the lane's)")
	return exitUsage
}
