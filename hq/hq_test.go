package hq_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/scanpay/scanpay/fleet"
	"github.com/scanpay/scanpay/fleet/event"
	"github.com/scanpay/scanpay/fleet/fleettest"
	"github.com/scanpay/scanpay/hq"
	"github.com/scanpay/scanpay/hq/pgtest"
	"github.com/scanpay/scanpay/payment/journal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ev(lane string, seq uint64, no, state string, refunded int64) event.Event {
	at := time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Second)
	return event.Event{V: 1, Lane: lane, Seq: seq, Kind: event.KindOrder, At: at, Order: event.Order{MchOrderNo: no, Amount: 2865,
		Currency: "CAD", Channel: "WX_MICROPAY", State: state, Status: -1, CodeMasked: "13************6789", Source: "keypad",
		Refunded: refunded, CreatedAt: at, UpdatedAt: at}}
}

func openStore(t *testing.T, pg *pgtest.Server) (*hq.Store, string) {
	t.Helper()
	dsn := pg.NewDB(t)
	s, err := hq.OpenStore(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, dsn
}

// Redelivered, duplicated and reordered events leave every order in the
// state of its newest event, and each event is stored once.
func TestApplyIdempotentInAnyOrder(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	s, dsn := openStore(t, pg)
	if v, err := s.Version(ctx); err != nil || v != hq.SchemaVersion() {
		t.Fatalf("schema version %d, %v", v, err)
	}
	// Opening again migrates nothing and keeps the data.
	s2, err := hq.OpenStore(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()

	history := []event.Event{
		ev("L1", 1, "A", "SUBMITTING", 0), ev("L1", 2, "A", "POLLING", 0), ev("L1", 3, "B", "SUBMITTING", 0),
		ev("L1", 4, "A", "PAID", 0), ev("L1", 5, "B", "DECLINED", 0), ev("L2", 1, "A", "SUBMITTING", 0), ev("L2", 2, "A", "PAID", 0),
	}
	refund := ev("L1", 6, "A", "PAID", 0)
	refund.Kind, refund.Refund = event.KindRefund, &event.Refund{MchRefundNo: "R1", Amount: 1000, State: "SENT", CreatedAt: refund.At, UpdatedAt: refund.At}
	done := ev("L1", 7, "A", "PAID", 1000)
	done.Kind, done.Refund = event.KindRefund, &event.Refund{MchRefundNo: "R1", Amount: 1000, State: "DONE", CreatedAt: refund.At, UpdatedAt: done.At}
	history = append(history, refund, done)

	r := rand.New(rand.NewPCG(1, 2))
	var fresh int
	for round := 0; round < 4; round++ {
		shuffled := append([]event.Event(nil), history...)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		for len(shuffled) > 0 {
			n := min(len(shuffled), 1+r.IntN(4))
			got, err := s.Apply(ctx, shuffled[:n])
			if err != nil {
				t.Fatal(err)
			}
			fresh += got
			shuffled = shuffled[n:]
		}
	}
	if fresh != len(history) {
		t.Fatalf("%d events counted new over 4 deliveries, want %d", fresh, len(history))
	}
	if n, _ := s.EventCount(ctx, ""); n != int64(len(history)) {
		t.Fatalf("%d events stored, want %d", n, len(history))
	}
	l1, err := s.Orders(ctx, "L1")
	if err != nil {
		t.Fatal(err)
	}
	if len(l1) != 2 || l1[0].State != "PAID" || l1[0].LastSeq != 7 || l1[0].Refunded != 1000 || l1[1].State != "DECLINED" {
		t.Fatalf("L1 orders %+v", l1)
	}
	rf, _ := s.Refunds(ctx, "L1")
	if len(rf) != 1 || rf[0].State != "DONE" {
		t.Fatalf("refunds %+v", rf)
	}
	l2, _ := s.Orders(ctx, "L2")
	if len(l2) != 1 || l2[0].State != "PAID" {
		t.Fatalf("L2 orders %+v", l2)
	}
	totals, err := s.Totals(ctx, time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC), "UTC")
	if err != nil {
		t.Fatal(err)
	}
	want := []hq.Total{{"2026-11-27", "L1", "WX_MICROPAY", "DECLINED", "CAD", 1, 2865, 0}, {"2026-11-27", "L1", "WX_MICROPAY", "PAID", "CAD", 1, 2865, 1000},
		{"2026-11-27", "L2", "WX_MICROPAY", "PAID", "CAD", 1, 2865, 0}}
	if fmt.Sprint(totals) != fmt.Sprint(want) {
		t.Fatalf("totals\n%v\nwant\n%v", totals, want)
	}
}

// A database with a newer schema than this head office is refused.
func TestNewerSchemaRefused(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	s, dsn := openStore(t, pg)
	_ = s
	s3, err := hq.OpenStore(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if err := s3.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// Pretend a newer scanpay migrated it.
	conn, err := openPG(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO schema_migrations(version) VALUES ($1)`, hq.SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if _, err := hq.OpenStore(ctx, dsn); err == nil || !strings.Contains(err.Error(), "newer than this scanpay") {
		t.Fatalf("newer schema: %v", err)
	}
}

// lane is a journal with its outbox and publisher.
type lane struct {
	id  string
	jr  *journal.Journal
	out *journal.Outbox
	pub *fleet.Publisher
}

func newLane(t testing.TB, id string, servers []string, pubCfg func(*fleet.Config)) *lane {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.db")
	l := &lane{id: id}
	var err error
	if l.jr, err = journal.Open(path, journal.Options{OnCommit: func(time.Duration) {
		if l.pub != nil {
			l.pub.Nudge()
		}
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.jr.Close() })
	if err := l.jr.SetFleet(context.Background(), id, 100000); err != nil {
		t.Fatal(err)
	}
	if l.out, err = journal.OpenOutbox(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.out.Close() })
	cfg := fleet.Config{Lane: id, Link: fleet.Link{Servers: servers, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond},
		Stream: "SCANPAY", Poll: 50 * time.Millisecond, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, AckWait: 2 * time.Second}
	if pubCfg != nil {
		pubCfg(&cfg)
	}
	pub, err := fleet.New(cfg, l.out)
	if err != nil {
		t.Fatal(err)
	}
	l.pub = pub
	return l
}

// sell writes a paid sale and a refund straight into the journal, as the
// engine would.
func (l *lane) sell(t testing.TB, i int) {
	t.Helper()
	ctx := context.Background()
	o, err := l.jr.AddOrder(ctx, journal.NewOrder{TerminalID: l.id, Amount: int64(100 + i), Currency: "CAD", Channel: "WX_MICROPAY",
		CodeMasked: "13************6789", CodeHash: fmt.Sprintf("%s-%d", l.id, i), Source: "keypad"},
		func(n uint64) string { return fmt.Sprintf("%s-%06d", l.id, n) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.jr.Transition(ctx, o.MchOrderNo, journal.StateSubmitting, journal.StatePaid, journal.Update{PayOrderID: "AM" + o.MchOrderNo, Status: 2}); err != nil {
		t.Fatal(err)
	}
	if i%5 == 0 {
		r, err := l.jr.AddRefund(ctx, journal.NewRefund{OrderNo: o.MchOrderNo, Amount: 50, Source: journal.RefundByOperator},
			func(n uint64) string { return fmt.Sprintf("%sR%04d", l.id, n) })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.jr.FinishRefund(ctx, r.MchRefundNo, journal.RefundDone, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// runHQ runs head office in the background until the test ends.
func runHQ(t *testing.T, cfg hq.Config, store *hq.Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := hq.New(cfg, store).Run(ctx); err != nil {
			t.Errorf("hq: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func run(t *testing.T, f func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := f(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// compare checks head office has exactly the lane's orders and refunds.
func compare(t *testing.T, s *hq.Store, l *lane) bool {
	t.Helper()
	ctx := context.Background()
	orders, err := l.jr.Orders(ctx, journal.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Orders(ctx, l.id)
	if err != nil || len(got) != len(orders) {
		return false
	}
	byNo := map[string]hq.Order{}
	for _, o := range got {
		byNo[o.MchOrderNo] = o
	}
	for _, o := range orders {
		h, ok := byNo[o.MchOrderNo]
		if !ok || h.State != o.State.String() || h.Amount != o.Amount || h.Refunded != o.Refunded || h.PayOrderID != o.PayOrderID ||
			h.Currency != o.Currency || h.Channel != o.Channel || h.CodeMasked != o.CodeMasked {
			return false
		}
	}
	refunds, _ := l.jr.Refunds(ctx, "")
	hr, _ := s.Refunds(ctx, l.id)
	if len(hr) != len(refunds) {
		return false
	}
	for i, r := range refunds {
		if hr[i].MchRefundNo != r.MchRefundNo || hr[i].State != string(r.State) || hr[i].Amount != r.Amount {
			return false
		}
	}
	return true
}

// Lanes publish to a three-node cluster whose stream is replicated three
// times; one node dies and comes back meanwhile; head office ends up with
// exactly the lanes' journals.
func TestClusterEndToEnd(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	cluster := fleettest.Start(t, 3, nil)
	store, _ := openStore(t, pg)
	metrics := hq.NewMetrics("test")
	runHQ(t, hq.Config{Link: fleet.Link{Servers: cluster.URLs(), ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond},
		ManageStream: true, Replicas: 3, Batch: 64, AckWait: 2 * time.Second, Metrics: metrics, Logger: zap.NewNop()}, store)
	lanes := []*lane{newLane(t, "L1", cluster.URLs(), nil), newLane(t, "L2", cluster.URLs(), nil)}
	for _, l := range lanes {
		run(t, l.pub.Run)
	}
	for i := 0; i < 40; i++ {
		for _, l := range lanes {
			l.sell(t, i)
		}
		if i == 15 {
			cluster.Kill(1)
		}
		if i == 30 {
			cluster.Restart(1)
		}
	}
	for _, l := range lanes {
		eventually(t, "head office has lane "+l.id, 60*time.Second, func() bool { return compare(t, store, l) })
		eventually(t, "lane "+l.id+" outbox empty", 10*time.Second, func() bool {
			s, _ := l.out.Stats(context.Background())
			return s.Backlog == 0
		})
	}
	// The stream is replicated three times.
	nc, err := nats.Connect(cluster.URLs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), "SCANPAY")
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("stream replicas %d", r)
	}
	if value(metrics.Events("applied")) < 1 {
		t.Fatal("applied events not counted")
	}
}

// Malformed, oversized, unknown-version and other-lane events are rejected
// with a log line and a metric; good events around them still arrive.
func TestBadEventsRejected(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	srv := fleettest.Start(t, 1, nil)
	store, _ := openStore(t, pg)
	metrics := hq.NewMetrics("test")
	core, logs := observer.New(zap.WarnLevel)
	runHQ(t, hq.Config{Link: fleet.Link{Servers: srv.URLs()}, ManageStream: true, Metrics: metrics, Logger: zap.New(core)}, store)

	nc, err := nats.Connect(srv.URLs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	eventually(t, "stream created", 10*time.Second, func() bool { _, err := js.Stream(ctx, "SCANPAY"); return err == nil })
	pub := func(subject string, data []byte) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, data); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
	}
	good := func(lane string, seq uint64) []byte {
		b, _ := json.Marshal(ev(lane, seq, fmt.Sprintf("%s-%d", lane, seq), "PAID", 0))
		return b
	}
	pub("scanpay.lane.L1.events", good("L1", 1))
	pub("scanpay.lane.L1.events", []byte(`{"v":1,"lane":"L1","seq":`))
	pub("scanpay.lane.L1.events", []byte(`{"v":1,"lane":"L1","pad":"`+strings.Repeat("x", event.MaxSize)+`"}`))
	future := good("L1", 2)
	future = []byte(strings.Replace(string(future), `"v":1`, `"v":2`, 1))
	pub("scanpay.lane.L1.events", future)
	pub("scanpay.lane.L1.events", good("L2", 3)) // L2's event on L1's subject
	full := ev("L1", 4, "L1-4", "PAID", 0)
	full.Order.CodeMasked = "134567890123456789" // a full code: never accepted
	b, _ := json.Marshal(full)
	pub("scanpay.lane.L1.events", b)
	pub("scanpay.lane.L1.events", good("L1", 5))
	nc.Publish("scanpay.lane.L3.heartbeat", []byte(`{"v":1,"lane":"L9","at":"2026-11-27T15:00:00Z"}`))

	eventually(t, "good events applied", 20*time.Second, func() bool {
		n, _ := store.EventCount(ctx, "L1")
		return n == 2
	})
	eventually(t, "rejects counted", 10*time.Second, func() bool {
		return value(metrics.Rejected("malformed")) == 1 && value(metrics.Rejected("too_large")) == 1 &&
			value(metrics.Rejected("version")) == 1 && value(metrics.Rejected("wrong_lane")) == 2 &&
			value(metrics.Rejected("invalid")) == 1
	})
	if n := logs.FilterMessage("event rejected").Len(); n != 5 {
		t.Fatalf("%d 'event rejected' log lines, want 5", n)
	}
	if n := logs.FilterMessage("heartbeat rejected").Len(); n != 1 {
		t.Fatalf("%d 'heartbeat rejected' log lines, want 1", n)
	}
	if o, _ := store.Orders(ctx, "L2"); len(o) != 0 {
		t.Fatalf("an event on another lane's subject was stored: %+v", o)
	}
}

func openPG(ctx context.Context, dsn string) (*pgx.Conn, error) { return pgx.Connect(ctx, dsn) }

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// PostgreSQL failing: nothing is acknowledged, the events stay in the
// stream, and once it is back they are all written, once.
func TestDatabaseOutage(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	srv := fleettest.Start(t, 1, nil)
	store, dsn := openStore(t, pg)
	metrics := hq.NewMetrics("test")
	runHQ(t, hq.Config{Link: fleet.Link{Servers: srv.URLs()}, ManageStream: true, AckWait: 2 * time.Second, Metrics: metrics, Logger: zap.NewNop()}, store)
	l := newLane(t, "L1", srv.URLs(), nil)
	run(t, l.pub.Run)
	ctx := context.Background()
	l.sell(t, 1)
	eventually(t, "first sale at head office", 20*time.Second, func() bool { return compare(t, store, l) })

	conn, err := openPG(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `ALTER TABLE orders RENAME TO orders_away`); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 10; i++ {
		l.sell(t, i)
	}
	eventually(t, "database errors counted", 20*time.Second, func() bool { return value(metrics.DBErrors()) > 0 })
	if n, _ := store.EventCount(ctx, "L1"); n != 2 {
		t.Fatalf("%d events stored while the database failed", n)
	}
	if _, err := conn.Exec(ctx, `ALTER TABLE orders_away RENAME TO orders`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "head office caught up", 30*time.Second, func() bool { return compare(t, store, l) })
	st, _ := l.out.Stats(ctx)
	if n, _ := store.EventCount(ctx, "L1"); n != int64(st.LastSeq) {
		t.Fatalf("%d events stored, the lane wrote %d", n, st.LastSeq)
	}
}
