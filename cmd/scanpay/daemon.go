package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/config"
	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/fleet"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

// daemon is every component of a lane, built from the config, run under
// one owner.
type daemon struct {
	cfg     config.Config
	log     *zap.Logger
	jr      *journal.Journal
	client  *iotpay.Client
	term    *payment.Terminal
	link    *ecr.Link
	runners []runner
	closers []func()
	fleet   *fleetLane    // nil when [fleet] is off
	devices *deviceStatus // device states for the fleet heartbeat
}

type runner struct {
	name string
	run  func(ctx context.Context) error
	// fatal: an error from run stops the daemon (a listener that cannot
	// bind); device runners retry on their own and never return errors.
	fatal bool
}

// overrides let the demo and tests replace parts of the wiring.
type overrides struct {
	screen     payment.ScreenSink   // instead of the configured display
	noScanner  bool                 // the caller scans through the terminal
	results    []payment.ResultSink // extra result sinks
	httpClient *http.Client         // gateway transport
	observer   *metrics             // metrics, when enabled
	consoleOut io.Writer            // where the console display draws
	// clockSynced replaces the system clock check (tests).
	clockSynced func() (bool, error)
	version     string              // for the fleet heartbeat
	fleetTune   func(*fleet.Config) // tests shorten the fleet link's timers
}

func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// run runs the terminal and every runner until ctx ends (nil) or the
// terminal stops on a journal failure or a fatal runner fails (error).
func (d *daemon) run(ctx context.Context, extra ...runner) (err error) {
	defer func() {
		if err != nil && d.jr != nil {
			// A storage failure or damage: the next start reads the whole
			// journal before it takes a sale.
			d.jr.KeepUnclean()
		}
		d.close()
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	termErr := make(chan error, 1)
	go func() { termErr <- d.term.Run(ctx) }()
	fatal := make(chan error, 1)
	var wg sync.WaitGroup
	for _, r := range append(d.runners, extra...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.run(ctx)
			if err != nil && ctx.Err() == nil {
				d.log.Error("component stopped", zap.String("component", r.name), zap.Error(err))
				if r.fatal {
					select {
					case fatal <- err:
					default:
					}
				}
			}
		}()
	}
	select {
	case <-ctx.Done():
		err = <-termErr
	case err = <-termErr:
	case err = <-fatal:
		cancel()
		<-termErr
	}
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		d.log.Warn("a component did not stop in time")
	}
	return err
}

func (c *CLI) run(ctx context.Context, args []string) int {
	fs, path := c.flags("run", "", "Runs the payment terminal daemon. systemd starts it; see scanpay.service.")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	cfg, ok := c.loadConfig(ctx, *path)
	if !ok {
		if ctx.Err() != nil {
			return exitOK // stopped (SIGTERM) while reading the config: a clean stop
		}
		return exitUsage
	}
	key, source, err := cfg.LoadKey(c.Getenv)
	if err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	log := newLogger(cfg.Log, c.Stderr)
	defer log.Sync()
	log.Info("scanpay starting", zap.String("version", c.Version), zap.String("config", *path), zap.String("lane", cfg.Terminal.ID),
		zap.String("merchantKey", "from "+source))
	for _, e := range cfg.CheckDevices() {
		log.Warn("device missing at start; retrying in the background", zap.String("problem", e.Error()))
	}
	for _, w := range cfg.Warnings() {
		log.Warn("config warning", zap.String("warning", w))
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// A lane is one sale at a time, mostly waiting on devices, disk and
		// the gateway. A second P only adds wake-ups: each hand-off between
		// goroutines starts a spinning thread that finds nothing to do.
		// One P cut CPU per sale by a quarter and context switches by a
		// third in bench-e2e; blocking syscalls still hand the P over.
		// (Only the daemon: the demo shares its process with the simulator.)
		runtime.GOMAXPROCS(1)
	}
	return c.runDaemon(ctx, cfg, key, log, overrides{consoleOut: c.Stdout, version: c.Version})
}

// runDaemon builds and runs the daemon, with metrics and systemd
// notification, and maps the outcome to an exit code.
func (c *CLI) runDaemon(ctx context.Context, cfg config.Config, key string, log *zap.Logger, o overrides) int {
	var extra []runner
	if os.Getenv("GOGC") == "" {
		// A sale allocates little and often; collecting at half the live
		// heap instead of all of it keeps the resident set near 20 MB
		// for a few microseconds of CPU per sale (measured in bench-e2e).
		debug.SetGCPercent(50)
	}
	if cfg.Metrics != nil && cfg.Metrics.Listen != "" && o.observer == nil {
		o.observer = newMetrics(c.Version)
	}
	d, err := build(cfg, key, log, o)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		c.errorf("%v", err)
		return exitFailure
	}
	if o.observer != nil && cfg.Metrics != nil && cfg.Metrics.Listen != "" {
		extra = append(extra, o.observer.server(cfg.Metrics.Listen, d, log.Named("metrics")))
		o.observer.watchJournal(d.jr)
	}
	var checks []healthCheck
	if d.link != nil {
		checks = append(checks, d.link.Health)
	}
	extra = append(extra, systemdRunner(d.term, log.Named("systemd"), checks...), integrityRunner(d, log.Named("journal")), trimRunner(d))
	err = d.run(ctx, extra...)
	var fe *payment.FatalError
	switch {
	case errors.As(err, &fe):
		log.Error("stopped: the journal failed; systemd will restart scanpay and it will recover from the journal", zap.Error(err))
		c.errorf("%v", err)
		return exitFailure
	case err != nil:
		log.Error("stopped", zap.Error(err))
		c.errorf("%v", err)
		return exitFailure
	}
	log.Info("scanpay stopped")
	return exitOK
}

// integrityRunner reads the whole journal in the background once the lane
// is ready, when the start skipped that read (after a clean stop). Damage
// stops the daemon, and the next start refuses the journal with the
// damage message.
// trimRunner drops, once the lane is up, the binary's pages that were read
// ahead at start and never used again, so they leave the resident set.
func trimRunner(d *daemon) runner {
	return runner{name: "trim", run: func(ctx context.Context) error {
		select {
		case <-d.term.Ready():
			trimText()
		case <-ctx.Done():
		}
		return nil
	}}
}

func integrityRunner(d *daemon, log *zap.Logger) runner {
	return runner{name: "integrity", fatal: true, run: func(ctx context.Context) error {
		if d.jr.CheckedAtOpen {
			return nil
		}
		select {
		case <-d.term.Ready():
		case <-ctx.Done():
			return nil
		}
		start := time.Now()
		if err := d.jr.CheckIntegrity(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		log.Info("journal integrity checked", zap.Duration("took", time.Since(start)))
		return nil
	}}
}
