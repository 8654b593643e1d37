package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

var (
	_ payment.Observer = (*metrics)(nil)
	_ device.Observer  = (*metrics)(nil)
)

// metrics is the Prometheus view of a lane. It implements
// payment.Observer and device.Observer.
type metrics struct {
	reg           *prometheus.Registry
	sales         *prometheus.CounterVec
	gateway       *prometheus.HistogramVec
	deviceUp      *prometheus.GaugeVec
	deviceReopens *prometheus.CounterVec
	scansRejected *prometheus.CounterVec
	outputFails   *prometheus.CounterVec
	alerts        *prometheus.CounterVec
	ecrAnswers    *prometheus.CounterVec
	keysRefused   *prometheus.CounterVec
	ecrHealthy    prometheus.Gauge
	commit        prometheus.Histogram

	mu      sync.Mutex
	wasDown map[string]bool
	fleetM  *fleetMetrics
}

func newMetrics(version string) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), wasDown: map[string]bool{}}
	m.sales = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanpay_sales_total",
		Help: "Sales settled, by channel and outcome (PAID, DECLINED, UNCONFIRMED, LATE_PAID)."}, []string{"channel", "outcome"})
	m.gateway = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "scanpay_gateway_request_seconds",
		Help: "IOTPay request latency by endpoint and result.", Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30}}, []string{"endpoint", "result"})
	m.deviceUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scanpay_device_up",
		Help: "1 when the device is open and working."}, []string{"device"})
	m.deviceReopens = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanpay_device_reopens_total",
		Help: "Times a device came back after being lost."}, []string{"device"})
	m.scansRejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanpay_scans_rejected_total",
		Help: "Scanned input refused, by reason (unsupported, used, no_amount, busy, partial, overlong, control)."}, []string{"reason"})
	m.outputFails = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanpay_output_failures_total",
		Help: "Failed writes to the display, beeper or register."}, []string{"output"})
	m.alerts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanpay_alerts_total",
		Help: "Things an operator must look at: reply_mismatch (a paid reply that does not match its order), gateway_conflict, unresolved_order, late_payment."}, []string{"kind"})
	m.ecrAnswers = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanpay_ecr_answers_total",
		Help: "Answers to the cash register, by kind (sale, again, refund, refused, busy, frame, malformed) and status (0 approved, 7 refused, 9 not verified, NAK)."}, []string{"kind", "status"})
	m.keysRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanpay_keys_refused_total",
		Help: "Keypad keys refused, by reason (a stuck key shows here in full; the log summarises it)."}, []string{"reason"})
	m.ecrHealthy = prometheus.NewGauge(prometheus.GaugeOpts{Name: "scanpay_ecr_link_healthy",
		Help: "1 while the register link's goroutine makes progress (0: wedged; the watchdog is withheld)."})
	m.commit = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scanpay_journal_commit_seconds",
		Help: "Journal commit latency, fsync included.", Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, 1}})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scanpay_build_info", Help: "Version of the running scanpay."},
		[]string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	m.reg.MustRegister(m.sales, m.gateway, m.deviceUp, m.deviceReopens, m.scansRejected, m.outputFails, m.alerts, m.ecrAnswers, m.keysRefused, m.ecrHealthy, m.commit, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) SaleFinished(channel string, state journal.State) {
	m.sales.WithLabelValues(channel, state.String()).Inc()
}

func (m *metrics) ScanRejected(reason string) { m.scansRejected.WithLabelValues(reason).Inc() }

func (m *metrics) GatewayCall(endpoint string, outcome iotpay.Outcome, d time.Duration) {
	if d > 0 {
		m.gateway.WithLabelValues(endpoint, outcome.String()).Observe(d.Seconds())
	}
}

func (m *metrics) keyRefused(reason string) { m.keysRefused.WithLabelValues(reason).Inc() }

func (m *metrics) OutputFailed(output string) { m.outputFails.WithLabelValues(output).Inc() }

func (m *metrics) Alert(kind string) { m.alerts.WithLabelValues(kind).Inc() }

func (m *metrics) ecrAnswer(kind string, status byte) {
	s := string(status)
	if status < 0x20 {
		s = "NAK"
	}
	m.ecrAnswers.WithLabelValues(kind, s).Inc()
}

func (m *metrics) DeviceUp(device string, up bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if up {
		m.deviceUp.WithLabelValues(device).Set(1)
		if m.wasDown[device] {
			m.deviceReopens.WithLabelValues(device).Inc()
		}
		return
	}
	m.deviceUp.WithLabelValues(device).Set(0)
	m.wasDown[device] = true
}

func (m *metrics) journalCommit(d time.Duration) { m.commit.Observe(d.Seconds()) }

// openOrders reports open orders by state at each scrape, from the journal.
type openOrders struct {
	jr   *journal.Journal
	desc *prometheus.Desc
}

func (o openOrders) Describe(ch chan<- *prometheus.Desc) { ch <- o.desc }

func (o openOrders) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	open, err := o.jr.OpenOrders(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(o.desc, err)
		return
	}
	counts := map[string]float64{"ARMED": 0, "SUBMITTING": 0, "POLLING": 0, "UNCONFIRMED": 0, "LATE_PAID": 0}
	for _, ord := range open {
		counts[ord.State.String()]++
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(o.desc, prometheus.GaugeValue, n, state)
	}
}

func (m *metrics) watchJournal(jr *journal.Journal) {
	m.reg.MustRegister(openOrders{jr: jr, desc: prometheus.NewDesc("scanpay_open_orders",
		"Orders not settled, by state; LATE_PAID counts late payments not yet refunded.", []string{"state"}, nil)})
}

// Bounds of the metrics server. It serves one scraper and a health
// check, on loopback by default; whoever can reach it must not be able to
// grow the daemon by holding connections open (4 000 idle keep-alive
// connections took RSS from 26 to 101 MB, and it stayed there).
const (
	metricsMaxConns     = 32 // served at once; more wait in the kernel's queue
	metricsReadTimeout  = 10 * time.Second
	metricsWriteTimeout = 10 * time.Second // a scrape reads the journal for at most 2 s
	metricsIdleTimeout  = 30 * time.Second // a scraper's keep-alive, not a squatter's
	metricsMaxHeader    = 8 << 10
)

// server serves /metrics and /healthz on listen.
func (m *metrics) server(listen string, d *daemon, log *zap.Logger) runner {
	return runner{name: "metrics", fatal: true, run: func(ctx context.Context) error {
		mux := http.NewServeMux()
		// No gzip: the scraper is on loopback or the shop's LAN, and
		// each compressed scrape held a 1.3 MB compressor on the heap
		// (bench-e2e: RSS 19.8 MiB instead of 18.8 with a scrape every
		// 100 sales).
		mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{DisableCompression: true}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			pctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			state, err := d.term.Ping(pctx)
			w.Header().Set("Content-Type", "application/json")
			body := map[string]any{"state": state.String(), "lane": d.cfg.Terminal.ID}
			healthy := true
			switch {
			case err != nil:
				body["error"], healthy = "main loop not answering", false
			case state == payment.StateStarting:
				healthy = false
			case state == payment.StateWaitingClock:
				body["error"], healthy = "waiting for the system clock to be synchronised", false
			}
			if d.link != nil {
				link := map[string]any{"peer": d.link.Peer()}
				if lerr := d.link.Health(); lerr != nil {
					link["error"], healthy = lerr.Error(), false
					m.ecrHealthy.Set(0)
				} else {
					m.ecrHealthy.Set(1)
				}
				body["ecr"] = link
			}
			if !healthy {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			json.NewEncoder(w).Encode(body)
		})
		return serveMetrics(ctx, listen, mux, log)
	}}
}

// serveMetrics serves h on listen until ctx ends, with the limits a LAN
// scraper never reaches and a squatter always does (the lane's and head
// office's metrics alike).
func serveMetrics(ctx context.Context, listen string, h http.Handler, log *zap.Logger) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	log.Info("metrics listening", zap.String("address", ln.Addr().String()), zap.Int("maxConnections", metricsMaxConns))
	ln = newLimitListener(ln, metricsMaxConns)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: metricsReadTimeout,
		WriteTimeout: metricsWriteTimeout, IdleTimeout: metricsIdleTimeout, MaxHeaderBytes: metricsMaxHeader,
		ErrorLog: zap.NewStdLog(log)}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// limitListener accepts at most n connections at a time: Accept waits
// for one to close, and the kernel's accept queue holds the rest, at no
// cost to the daemon. (golang.org/x/net/netutil has the same; this is
// the few lines needed, without a new module.)
type limitListener struct {
	net.Listener
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

// Close also ends an Accept waiting for a slot.
func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.done) })
	return err
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
