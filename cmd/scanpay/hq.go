//go:build !nohq

package main

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"github.com/scanpay/scanpay/config"
	"github.com/scanpay/scanpay/display"
	"github.com/scanpay/scanpay/fleet"
	"github.com/scanpay/scanpay/hq"
)

const hqUsage = `scanpay-hq — head office: every lane's orders and health in PostgreSQL

Usage: scanpay-hq [COMMAND] [flags]   (or: scanpay hq COMMAND, in the scanpay-hq build)

Commands:
  run      consume lane events into PostgreSQL (the default; systemd runs it)
  report   totals per day, lane, channel and outcome across the fleet
  open     unconfirmed orders, late payments and unknown refunds across the fleet
  lanes    each lane's last heartbeat, state, devices and backlog; silent lanes

Every command takes --config PATH (default /etc/scanpay/hq.toml).
`

func (c *CLI) hq(ctx context.Context, args []string) int {
	sub := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "run":
		return c.hqRun(ctx, args)
	case "report":
		return c.hqReport(ctx, args)
	case "open":
		return c.hqOpen(ctx, args)
	case "lanes":
		return c.hqLanes(ctx, args)
	case "help":
		fmt.Fprint(c.Stdout, hqUsage)
		return exitOK
	}
	fmt.Fprintf(c.Stderr, "scanpay hq: unknown command %q\n\n%s", sub, hqUsage)
	return exitUsage
}

// hqOpenStore loads hq.toml and connects to PostgreSQL.
func (c *CLI) hqOpenStore(ctx context.Context, path string) (config.HQ, *hq.Store, int) {
	cfg, err := config.LoadHQ(path)
	if err != nil {
		c.errorf("%v", err)
		return cfg, nil, exitUsage
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store, err := hq.OpenStore(sctx, cfg.Postgres.URL)
	if err != nil {
		c.errorf("%v", err)
		return cfg, nil, exitFailure
	}
	return cfg, store, -1
}

// reportZone is the report's time zone: hq.toml's, or this machine's by
// its IANA name (PostgreSQL needs a name, not an offset).
func reportZone(tz string) (string, *time.Location) {
	if tz == "" {
		tz = os.Getenv("TZ")
	}
	if tz == "" {
		if link, err := filepath.EvalSymlinks("/etc/localtime"); err == nil {
			if _, after, ok := strings.Cut(link, "zoneinfo/"); ok {
				tz = after
			}
		}
	}
	loc, err := time.LoadLocation(tz)
	if tz == "" || err != nil {
		return "UTC", time.UTC
	}
	return tz, loc
}

func (c *CLI) hqRun(ctx context.Context, args []string) int {
	fs, path := c.flags("hq run", "", "Runs head office: a durable JetStream consumer that writes every lane's events to\nPostgreSQL, and keeps the lanes' heartbeats. systemd runs it (scanpay-hq.service).")
	hqDefault(fs)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	cfg, err := config.LoadHQ(*path)
	if err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	log := newLogger(cfg.Log, c.Stderr)
	defer log.Sync()
	log.Info("scanpay hq starting", zap.String("version", c.Version), zap.String("config", *path))
	n := cfg.NATS
	hcfg := hq.Config{Link: fleet.Link{Servers: n.Servers, Credentials: n.Credentials, CAFile: n.CAFile, CertFile: n.CertFile, KeyFile: n.KeyFile},
		Prefix: n.SubjectPrefix, Stream: n.Stream, ManageStream: n.ManageStream, Replicas: n.Replicas, MaxAge: n.MaxAge.Duration,
		Durable: n.Durable, Batch: n.Batch, AckWait: n.AckWait.Duration, SilentAfter: cfg.Lanes.SilentAfter.Duration, Logger: log.Named("hq")}
	if e := cfg.Embedded; e != nil {
		emb, err := hq.StartEmbedded(hq.EmbeddedConfig{ConfigFile: e.ConfigFile, Listen: e.Listen, StoreDir: e.StoreDir})
		if err != nil {
			log.Error("cannot start", zap.Error(err))
			c.errorf("%v", err)
			return exitFailure
		}
		defer emb.Close()
		log.Info("embedded NATS listening", zap.String("url", emb.ClientURL()))
		hcfg.InProcess = emb.Server()
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	store, err := hq.OpenStore(sctx, cfg.Postgres.URL)
	cancel()
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		c.errorf("%v", err)
		return exitFailure
	}
	defer store.Close()
	if cfg.Metrics != nil && cfg.Metrics.Listen != "" {
		hcfg.Metrics = hq.NewMetrics(c.Version)
	}
	h := hq.New(hcfg, store)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	if hcfg.Metrics != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serveMetrics(ctx, cfg.Metrics.Listen, hcfg.Metrics.Handler(), log); err != nil {
				errs <- fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := h.Run(ctx); err != nil {
			errs <- err
		}
	}()
	// Type=notify: ready once the database schema is current and the
	// consumer is starting.
	if _, err := sddaemon.SdNotify(false, sddaemon.SdNotifyReady+"\nSTATUS=consuming lane events"); err != nil {
		log.Warn("sd_notify failed", zap.Error(err))
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	stop()
	wg.Wait()
	if runErr != nil {
		log.Error("stopped", zap.Error(runErr))
		c.errorf("%v", runErr)
		return exitFailure
	}
	log.Info("scanpay hq stopped")
	return exitOK
}

func (c *CLI) hqReport(ctx context.Context, args []string) int {
	fs, path := c.flags("hq report", "", "Totals per day, lane, channel and outcome for orders created from --from to --to\n(both days included; default today), across every lane head office has heard from.")
	hqDefault(fs)
	from := fs.String("from", "", "first day, YYYY-MM-DD")
	to := fs.String("to", "", "last day, YYYY-MM-DD (default: --from)")
	lane := fs.String("lane", "", "only this lane")
	format := fs.String("format", "table", "table, csv or json")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	cfg, err := config.LoadHQ(*path)
	if err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	tz, loc := reportZone(cfg.Report.TimeZone)
	start, end, err := dayRangeIn(*from, *to, time.Now(), loc)
	if err == nil {
		err = checkFormat(*format)
	}
	if err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	_, store, code := c.hqOpenStore(ctx, *path)
	if store == nil {
		return code
	}
	defer store.Close()
	totals, err := store.Totals(ctx, start, end, tz)
	if err != nil {
		c.errorf("%v", err)
		return exitFailure
	}
	if *lane != "" {
		kept := totals[:0]
		for _, t := range totals {
			if t.Lane == *lane {
				kept = append(kept, t)
			}
		}
		totals = kept
	}
	var paidCount, lanes int64
	var paidAmount, refunded int64
	seen := map[string]bool{}
	for _, t := range totals {
		if t.Outcome == "PAID" || t.Outcome == "LATE_PAID" {
			paidCount += t.Count
			paidAmount += t.Amount
		}
		refunded += t.Refunded
		if !seen[t.Lane] {
			seen[t.Lane] = true
			lanes++
		}
	}
	switch *format {
	case "json":
		doc := struct {
			From       string     `json:"from"`
			To         string     `json:"to"`
			TimeZone   string     `json:"timeZone"`
			Totals     []hq.Total `json:"totals"`
			Lanes      int64      `json:"lanes"`
			PaidCount  int64      `json:"paidCount"`
			PaidAmount int64      `json:"paidAmount"`
			Refunded   int64      `json:"refunded"`
		}{From: start.Format("2006-01-02"), To: end.AddDate(0, 0, -1).Format("2006-01-02"), TimeZone: tz, Totals: totals,
			Lanes: lanes, PaidCount: paidCount, PaidAmount: paidAmount, Refunded: refunded}
		if doc.Totals == nil {
			doc.Totals = []hq.Total{}
		}
		return c.writeJSON(doc)
	case "csv":
		w := csv.NewWriter(c.Stdout)
		w.Write([]string{"day", "lane", "channel", "outcome", "currency", "count", "amount_cents", "refunded_cents"})
		for _, t := range totals {
			w.Write([]string{t.Day, t.Lane, t.Channel, t.Outcome, t.Currency, strconv.FormatInt(t.Count, 10),
				strconv.FormatInt(t.Amount, 10), strconv.FormatInt(t.Refunded, 10)})
		}
		w.Flush()
		return exitOK
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "DAY\tLANE\tCHANNEL\tOUTCOME\tCOUNT\tAMOUNT\tREFUNDED\t")
	for _, t := range totals {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t\n", t.Day, t.Lane, t.Channel, t.Outcome, t.Count, display.Money(t.Amount), display.Money(t.Refunded))
	}
	tw.Flush()
	fmt.Fprintf(c.Stdout, "\n%d lane(s). Paid: %d sale(s), %s; refunded %s (time zone %s)\n",
		lanes, paidCount, display.Money(paidAmount), display.Money(refunded), tz)
	return exitOK
}

func (c *CLI) hqOpen(ctx context.Context, args []string) int {
	fs, path := c.flags("hq open", "", "Lists what needs a person across the fleet: orders not settled, late payments\nnot refunded, refunds whose outcome is unknown.")
	hqDefault(fs)
	format := fs.String("format", "table", "table, csv or json")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if err := checkFormat(*format); err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	_, store, code := c.hqOpenStore(ctx, *path)
	if store == nil {
		return code
	}
	defer store.Close()
	items, err := store.Open(ctx)
	if err != nil {
		c.errorf("%v", err)
		return exitFailure
	}
	switch *format {
	case "json":
		if items == nil {
			items = []hq.OpenItem{}
		}
		return c.writeJSON(items)
	case "csv":
		w := csv.NewWriter(c.Stdout)
		w.Write([]string{"lane", "what", "mchOrderNo", "mchRefundNo", "createdAt", "amount_cents", "refunded_cents", "currency", "channel", "payOrderId", "message"})
		for _, i := range items {
			w.Write([]string{i.Lane, i.What, i.MchOrderNo, i.MchRefundNo, i.CreatedAt.Format(time.RFC3339), strconv.FormatInt(i.Amount, 10),
				strconv.FormatInt(i.Refunded, 10), i.Currency, i.Channel, i.PayOrderID, i.Message})
		}
		w.Flush()
		return exitOK
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LANE\tWHAT\tORDER\tREFUND\tCREATED\tAMOUNT\tREFUNDED\tIOTPAY ORDER\tNOTE")
	for _, i := range items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i.Lane, i.What, i.MchOrderNo, i.MchRefundNo,
			i.CreatedAt.Local().Format("2006-01-02 15:04:05"), display.Money(i.Amount), display.Money(i.Refunded), i.PayOrderID, i.Message)
	}
	tw.Flush()
	if len(items) == 0 {
		fmt.Fprintln(c.Stdout, "(nothing open across the fleet)")
	}
	return exitOK
}

func (c *CLI) hqLanes(ctx context.Context, args []string) int {
	fs, path := c.flags("hq lanes", "", "Lists every lane: last heartbeat, version, state, devices, events not yet\ndelivered; SILENT when no heartbeat came for lanes.silent_after.")
	hqDefault(fs)
	format := fs.String("format", "table", "table or json")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *format != "table" && *format != "json" {
		c.errorf("--format %q must be table or json", *format)
		return exitUsage
	}
	cfg, store, code := c.hqOpenStore(ctx, *path)
	if store == nil {
		return code
	}
	defer store.Close()
	lanes, err := store.Lanes(ctx, time.Now(), cfg.Lanes.SilentAfter.Duration)
	if err != nil {
		c.errorf("%v", err)
		return exitFailure
	}
	if *format == "json" {
		if lanes == nil {
			lanes = []hq.Lane{}
		}
		return c.writeJSON(lanes)
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LANE\tHEARTBEAT\tVERSION\tSTATE\tDEVICES\tBACKLOG\tLAST EVENT\t")
	silent := 0
	for _, l := range lanes {
		hb := "never"
		if l.LastHeartbeat != nil {
			hb = l.LastHeartbeat.Local().Format("2006-01-02 15:04:05")
		}
		if l.Silent {
			hb += " SILENT"
			silent++
		}
		var devs []string
		for name, up := range l.Devices {
			s := name + ":up"
			if !up {
				s = name + ":DOWN"
			}
			devs = append(devs, s)
		}
		last := "-"
		if l.LastEventAt != nil {
			last = fmt.Sprintf("#%d %s", l.LastSeq, l.LastEventAt.Local().Format("15:04:05"))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t\n", l.Lane, hb, l.Version, l.State, strings.Join(sortStrings(devs), " "), l.Backlog, last)
	}
	tw.Flush()
	fmt.Fprintf(c.Stdout, "\n%d lane(s), %d silent\n", len(lanes), silent)
	return exitOK
}

func sortStrings(s []string) []string {
	sort.Strings(s)
	return s
}

// hqDefault points --config at hq.toml.
func hqDefault(fs *flag.FlagSet) {
	fs.Lookup("config").DefValue = config.DefaultHQPath
	fs.Set("config", config.DefaultHQPath)
}
