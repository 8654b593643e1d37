package hq

import (
	"net/http"
	"runtime"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is head office's Prometheus view: events applied, duplicates and
// rejects, PostgreSQL errors, write time, lane-to-head-office lag, and per
// lane the last heartbeat, backlog and silence.
type Metrics struct {
	Registry     *prometheus.Registry
	events       *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	dbErrors     prometheus.Counter
	applySeconds prometheus.Histogram
	lag          prometheus.Histogram
	heartbeat    *prometheus.GaugeVec
	backlog      *prometheus.GaugeVec
	silent       *prometheus.GaugeVec
	silentLanes  prometheus.Gauge

	mu    sync.Mutex
	known map[string]bool
}

// NewMetrics registers head office's metrics.
func NewMetrics(version string) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), known: map[string]bool{}}
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanpay_hq_events_total",
		Help: "Lane events written to PostgreSQL (applied) or already there (duplicate)."}, []string{"result"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanpay_hq_rejected_total",
		Help: "Events and heartbeats refused, by reason (malformed, too_large, version, invalid, wrong_lane)."}, []string{"reason"})
	m.dbErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "scanpay_hq_db_errors_total",
		Help: "Batches PostgreSQL did not take (retried)."})
	m.applySeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scanpay_hq_apply_seconds",
		Help: "Time to write one batch of events to PostgreSQL.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10)})
	m.lag = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scanpay_hq_event_lag_seconds",
		Help: "From the lane's commit to head office's, per event.", Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60, 600, 3600}})
	m.heartbeat = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scanpay_hq_lane_last_heartbeat_timestamp_seconds",
		Help: "When each lane last reported (Unix time)."}, []string{"lane"})
	m.backlog = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scanpay_hq_lane_backlog_events",
		Help: "Events each lane has not delivered yet, as its last heartbeat said."}, []string{"lane"})
	m.silent = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scanpay_hq_lane_silent",
		Help: "1 when the lane has sent no heartbeat for longer than lanes.silent_after."}, []string{"lane"})
	m.silentLanes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "scanpay_hq_silent_lanes", Help: "Lanes currently silent."})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scanpay_hq_build_info", Help: "Version of the running head office."},
		[]string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	m.Registry.MustRegister(m.events, m.rejected, m.dbErrors, m.applySeconds, m.lag, m.heartbeat, m.backlog, m.silent,
		m.silentLanes, build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"malformed", "too_large", "version", "invalid", "wrong_lane"} {
		m.rejected.WithLabelValues(r)
	}
	m.events.WithLabelValues("applied")
	m.events.WithLabelValues("duplicate")
	return m
}

func (m *Metrics) setLanes(lanes []Lane) {
	m.mu.Lock()
	defer m.mu.Unlock()
	silent := 0
	for _, l := range lanes {
		m.known[l.Lane] = true
		if l.LastHeartbeat != nil {
			m.heartbeat.WithLabelValues(l.Lane).Set(float64(l.LastHeartbeat.Unix()))
		}
		m.backlog.WithLabelValues(l.Lane).Set(float64(l.Backlog))
		v := 0.0
		if l.Silent {
			v, silent = 1, silent+1
		}
		m.silent.WithLabelValues(l.Lane).Set(v)
	}
	m.silentLanes.Set(float64(silent))
}

// Handler serves /metrics (scanpay-hq runs it behind the same hardened
// server as a lane's).
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	return mux
}

// Events is the counter of events with a result (applied, duplicate).
func (m *Metrics) Events(result string) prometheus.Counter { return m.events.WithLabelValues(result) }

// Rejected is the counter of rejects for a reason.
func (m *Metrics) Rejected(reason string) prometheus.Counter {
	return m.rejected.WithLabelValues(reason)
}

// DBErrors counts batches PostgreSQL did not take.
func (m *Metrics) DBErrors() prometheus.Counter { return m.dbErrors }
