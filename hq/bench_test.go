package hq_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/scanpay/scanpay/fleet"
	"github.com/scanpay/scanpay/fleet/event"
	"github.com/scanpay/scanpay/fleet/fleettest"
	"github.com/scanpay/scanpay/hq"
	"github.com/scanpay/scanpay/hq/pgtest"
)

// BenchmarkApply measures head office's write rate into PostgreSQL with
// fsync on: batches of 256 events (a sale's two events each), as the
// consumer writes them.
//
//	go test -run '^$' -bench BenchmarkApply ./hq
func BenchmarkApply(b *testing.B) {
	pg := pgtest.Start(b, pgtest.Options{Durable: true})
	s, err := hq.OpenStore(context.Background(), pg.NewDB(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const batch = 256
	var seq uint64
	b.ResetTimer()
	for b.Loop() {
		evs := make([]event.Event, 0, batch)
		for len(evs) < batch {
			seq++
			no := fmt.Sprintf("L01-%08d", (seq+1)/2)
			state := "SUBMITTING"
			if seq%2 == 0 {
				state = "PAID"
			}
			evs = append(evs, ev("L01", seq, no, state, 0))
		}
		if _, err := s.Apply(ctx, evs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkLaneToHQ runs lanes (journal, outbox, publisher) into a
// JetStream server and head office into PostgreSQL (fsync on), each lane
// selling a sale every 20 ms, and reports the lag from a lane's commit to
// head office's (p50, p99) and the sizes the README's sizing uses.
//
//	go test -run '^$' -bench BenchmarkLaneToHQ -benchtime 300x ./hq
func BenchmarkLaneToHQ(b *testing.B) {
	pg := pgtest.Start(b, pgtest.Options{Durable: true})
	dsn := pg.NewDB(b)
	srv := fleettest.Start(b, 1, nil)
	s, err := hq.OpenStore(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		hq.New(hq.Config{Link: fleet.Link{Servers: srv.URLs()}, ManageStream: true, Logger: zap.NewNop()}, s).Run(ctx)
	}()
	// Steady state: the stream exists before the lanes start.
	nc, err := nats.Connect(srv.URLs()[0])
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for {
		if _, err := js.Stream(context.Background(), "SCANPAY"); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	const nLanes = 10
	lanes := make([]*lane, nLanes)
	pubDone := make(chan struct{}, nLanes)
	for i := range lanes {
		lanes[i] = newLane(b, fmt.Sprintf("L%02d", i), srv.URLs(), func(c *fleet.Config) { c.Logger = zap.NewNop() })
		go func() {
			lanes[i].pub.Run(ctx)
			pubDone <- struct{}{}
		}()
	}
	tick := time.NewTicker(20 * time.Millisecond)
	b.ResetTimer()
	n := 0
	for b.Loop() {
		<-tick.C
		for _, l := range lanes {
			l.sell(b, n)
		}
		n++
	}
	b.StopTimer()
	tick.Stop()
	var want int64
	for _, l := range lanes {
		st, _ := l.out.Stats(context.Background())
		want += int64(st.LastSeq)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		got, _ := s.EventCount(context.Background(), "")
		if got == want {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("head office has %d of %d events", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	var p50, p99, evBytes, orderBytes float64
	if err := conn.QueryRow(context.Background(), `SELECT
		percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - at)),
		percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - at)),
		pg_total_relation_size('events')::float8 / COUNT(*),
		(SELECT pg_total_relation_size('orders')::float8 / COUNT(*) FROM orders)
		FROM events`).Scan(&p50, &p99, &evBytes, &orderBytes); err != nil {
		b.Fatal(err)
	}
	st, err := js.Stream(context.Background(), "SCANPAY")
	if err != nil {
		b.Fatal(err)
	}
	info, _ := st.Info(context.Background())
	b.ReportMetric(p50*1000, "lag-p50-ms")
	b.ReportMetric(p99*1000, "lag-p99-ms")
	b.ReportMetric(float64(want)/float64(n*nLanes), "events/sale")
	b.ReportMetric(float64(info.State.Bytes)/float64(info.State.Msgs), "stream-B/event")
	b.ReportMetric(evBytes, "pg-B/event")
	b.ReportMetric(orderBytes, "pg-B/order")
	cancel()
	<-done
	for range lanes {
		<-pubDone
	}
}
