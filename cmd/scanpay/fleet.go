package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/scanpay/scanpay/config"
	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/fleet"
	"github.com/scanpay/scanpay/payment/journal"
)

// fleetLane is the lane's link to head office ([fleet]). The journal
// writes events into its outbox whatever happens here; the publisher only
// carries them, so a broken link never touches a sale.
type fleetLane struct {
	pub     *fleet.Publisher
	out     *journal.Outbox
	devices *deviceStatus
}

// deviceStatus remembers each device's state for the heartbeat and passes
// changes on.
type deviceStatus struct {
	mu   sync.Mutex
	up   map[string]bool
	next device.Observer
}

func (d *deviceStatus) DeviceUp(device string, up bool) {
	d.mu.Lock()
	d.up[device] = up
	d.mu.Unlock()
	if d.next != nil {
		d.next.DeviceUp(device, up)
	}
}

func (d *deviceStatus) snapshot() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]bool, len(d.up))
	for k, v := range d.up {
		out[k] = v
	}
	return out
}

// fleetLink turns [fleet] into the publisher's link settings.
func fleetLink(f *config.Fleet) fleet.Link {
	return fleet.Link{Servers: f.Servers, Credentials: f.Credentials, CAFile: f.CAFile, CertFile: f.CertFile, KeyFile: f.KeyFile}
}

// fleetCommit chains a journal commit hook with the publisher's nudge.
func (d *daemon) fleetCommit(prev func(time.Duration)) func(time.Duration) {
	return func(took time.Duration) {
		if prev != nil {
			prev(took)
		}
		if d.fleet != nil {
			d.fleet.pub.Nudge()
		}
	}
}

// fleetDevices wraps the device observer when the fleet is on, so
// heartbeats carry device status.
func (d *daemon) fleetDevices(next device.Observer) device.Observer {
	if d.cfg.Fleet == nil {
		return next
	}
	d.devices = &deviceStatus{up: map[string]bool{}, next: next}
	return d.devices
}

// setupFleet records in the journal whether this lane emits events (so the
// operator commands emit them too) and, when [fleet] is on, adds the
// publisher. A link that cannot be set up is logged; the lane sells on and
// its events wait in the outbox.
func (d *daemon) setupFleet(o overrides) error {
	f := d.cfg.Fleet
	ctx := context.Background()
	if f == nil {
		return d.jr.SetFleet(ctx, "", 100000)
	}
	if err := d.jr.SetFleet(ctx, d.cfg.Terminal.ID, f.MaxBacklog); err != nil {
		return err
	}
	out, err := journal.OpenOutbox(d.jr.Path())
	if err != nil {
		return err
	}
	d.closers = append(d.closers, func() { out.Close() })
	// Only what a power cut cannot undo goes to head office.
	out.HoldUndurable(d.jr.UndurableFrom)
	var obs fleet.Observer
	if o.observer != nil {
		obs = o.observer.fleet()
	}
	devices := d.devices
	fc := fleet.Config{Lane: d.cfg.Terminal.ID, Link: fleetLink(f), Prefix: f.SubjectPrefix, Stream: f.Stream,
		Heartbeat: f.Heartbeat.Duration, Version: o.version, Observer: obs, Logger: d.log.Named("fleet"),
		Status: func() fleet.Status {
			st := fleet.Status{State: d.term.State().String()}
			if devices != nil {
				st.Devices = devices.snapshot()
			}
			return st
		}}
	if o.fleetTune != nil {
		o.fleetTune(&fc)
	}
	pub, err := fleet.New(fc, out)
	if err != nil {
		d.log.Error("fleet link not started: fix [fleet] (scanpay check-config); events wait in the journal", zap.Error(err))
		return nil
	}
	d.fleet = &fleetLane{pub: pub, out: out, devices: devices}
	d.runners = append(d.runners, runner{name: "fleet", run: pub.Run})
	return nil
}

// checkFleet reports [fleet] files that cannot be used.
func (c *CLI) checkFleet(cfg config.Config) int {
	if cfg.Fleet == nil {
		return 0
	}
	if _, err := fleetLink(cfg.Fleet).Options(); err != nil {
		c.errorf("fleet: %v", err)
		return 1
	}
	fmt.Fprintf(c.Stdout, "# fleet: lane %s publishes to %v\n", cfg.Terminal.ID, cfg.Fleet.Servers)
	return 0
}

// fleetMetrics is the Prometheus view of the fleet link.
type fleetMetrics struct {
	backlog   prometheus.Gauge
	oldest    prometheus.Gauge
	dropped   prometheus.Gauge
	published prometheus.Counter
	up        prometheus.Gauge
}

// fleet registers the fleet metrics once and returns their observer.
func (m *metrics) fleet() *fleetMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fleetM != nil {
		return m.fleetM
	}
	f := &fleetMetrics{
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scanpay_fleet_backlog_events",
			Help: "Events in the journal's outbox not yet acknowledged by head office's JetStream."}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scanpay_fleet_backlog_oldest_seconds",
			Help: "Age of the oldest event not yet delivered (0 when none)."}),
		dropped: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scanpay_fleet_dropped_events",
			Help: "Events dropped because the backlog reached fleet.max_backlog (since the journal was created)."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "scanpay_fleet_published_total",
			Help: "Events JetStream acknowledged."}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scanpay_fleet_link_up", Help: "1 while connected to NATS."}),
	}
	m.reg.MustRegister(f.backlog, f.oldest, f.dropped, f.published, f.up)
	m.fleetM = f
	return f
}

func (f *fleetMetrics) FleetBacklog(events int64, oldest time.Duration, dropped int64) {
	f.backlog.Set(float64(events))
	f.oldest.Set(oldest.Seconds())
	f.dropped.Set(float64(dropped))
}

func (f *fleetMetrics) FleetPublished(n int) { f.published.Add(float64(n)) }

func (f *fleetMetrics) FleetConnected(up bool) {
	v := 0.0
	if up {
		v = 1
	}
	f.up.Set(v)
}
