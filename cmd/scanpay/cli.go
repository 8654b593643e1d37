package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/scanpay/scanpay/config"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure (journal, gateway, listener)
	exitUsage   = 2 // bad usage or invalid config
)

// CLI is the scanpay command line with its own streams and environment,
// so tests run it whole.
type CLI struct {
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	Getenv  func(string) string
	Version string
}

const usage = `scanpay — a payment terminal for WeChat Pay, Alipay and UnionPay codes

Usage: scanpay COMMAND [flags]

Commands:
  run           run the daemon (systemd starts it)
  demo          a checkout lane against the built-in gateway simulator
  demo-fleet    three lanes, head office's NATS and PostgreSQL, the fleet report
  check-config  validate the config and print it, secrets redacted
  report        totals per day, channel and outcome
  orders        list orders (--open: unsettled and late payments)
  query ORDER   ask IOTPay about an order and update the journal
  refund ORDER  refund a paid order (all of it, or --amount CENTS)
  hq            head office (the scanpay-hq build): lane events into PostgreSQL, fleet reports
  version       print the version

Every command takes --config PATH (default /etc/scanpay/scanpay.toml).
"scanpay COMMAND --help" describes a command's flags.
Exit status: 0 success, 1 runtime failure, 2 bad usage or invalid config.
`

// Run runs one command and returns the exit code.
func (c *CLI) Run(ctx context.Context, args []string) int {
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	if len(args) == 0 {
		fmt.Fprint(c.Stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return c.run(ctx, rest)
	case "demo":
		return c.demo(ctx, rest)
	case "demo-fleet":
		return c.demoFleet(ctx, rest)
	case "check-config":
		return c.checkConfig(ctx, rest)
	case "report":
		return c.report(ctx, rest)
	case "orders":
		return c.orders(ctx, rest)
	case "query":
		return c.query(ctx, rest)
	case "refund":
		return c.refund(ctx, rest)
	case "hq":
		return c.hq(ctx, rest)
	case "version", "--version":
		fmt.Fprintf(c.Stdout, "scanpay %s (%s, %s/%s)\n", c.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(c.Stdout, usage)
		return exitOK
	}
	fmt.Fprintf(c.Stderr, "scanpay: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

// flags makes a flag set with --config.
func (c *CLI) flags(name, args string, help string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("scanpay "+name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	path := fs.String("config", config.DefaultPath, "config file")
	fs.Usage = func() {
		fmt.Fprintf(c.Stderr, "Usage: scanpay %s [flags]%s\n\n%s\n\nFlags:\n", name, args, help)
		fs.PrintDefaults()
	}
	return fs, path
}

// parse parses flags, before and after positional arguments alike
// ("scanpay query ORDER --config X" as well as "scanpay query --config X
// ORDER"); fs.Args() then holds the positional ones. code is non-negative
// when the command must end.
func parse(fs *flag.FlagSet, args []string) (code int) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	// Leave only the positional arguments in fs.Args.
	if err := fs.Parse(append([]string{"--"}, positional...)); err != nil {
		return exitUsage
	}
	return -1
}

// loadConfig loads the config; ctx (SIGTERM) interrupts a large file.
func (c *CLI) loadConfig(ctx context.Context, path string) (config.Config, bool) {
	cfg, err := config.Load(ctx, path)
	if err != nil {
		fmt.Fprintf(c.Stderr, "scanpay: %v\n", err)
		return cfg, false
	}
	return cfg, true
}

func (c *CLI) checkConfig(ctx context.Context, args []string) int {
	fs, path := c.flags("check-config", "", "Validates the config file and the merchant key, checks that the\nconfigured devices exist, and prints the effective config (defaults\nincluded). The merchant key itself is never printed.")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	cfg, ok := c.loadConfig(ctx, *path)
	if !ok {
		return exitUsage
	}
	problems := 0
	if _, source, err := cfg.LoadKey(c.Getenv); err != nil {
		fmt.Fprintf(c.Stderr, "scanpay: %v\n", err)
		problems++
	} else {
		fmt.Fprintf(c.Stdout, "# merchant key: loaded from %s (not shown)\n", source)
	}
	for _, e := range cfg.CheckDevices() {
		fmt.Fprintf(c.Stderr, "scanpay: %v\n", e)
		problems++
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(c.Stderr, "scanpay: warning: %s\n", w)
	}
	problems += c.checkFleet(cfg)
	fmt.Fprintf(c.Stdout, "# effective configuration of %s\n", *path)
	enc := toml.NewEncoder(c.Stdout)
	enc.Indent = ""
	if err := enc.Encode(cfg); err != nil {
		fmt.Fprintf(c.Stderr, "scanpay: %v\n", err)
		return exitFailure
	}
	if problems > 0 {
		fmt.Fprintf(c.Stderr, "scanpay: %d problem(s) found\n", problems)
		return exitUsage
	}
	fmt.Fprintln(c.Stderr, "config OK")
	return exitOK
}

func (c *CLI) errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(c.Stderr, "scanpay: "+strings.TrimSpace(msg))
}
