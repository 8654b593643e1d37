package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

// gateJournal blocks chosen calls until released, to hold recovery back
// or wedge the main loop.
type gateJournal struct {
	payment.Journal
	mu       sync.Mutex
	openGate chan struct{}
	codeGate chan struct{}
}

func (g *gateJournal) OpenOrders(ctx context.Context) ([]journal.Order, error) {
	<-g.openGate
	return g.Journal.OpenOrders(ctx)
}

func (g *gateJournal) CodeUsed(ctx context.Context, h string) (bool, error) {
	g.mu.Lock()
	gate := g.codeGate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return g.Journal.CodeUsed(ctx, h)
}

type nopGateway struct{}

func (nopGateway) CreateOrder(context.Context, iotpay.CreateRequest) iotpay.Result {
	return iotpay.Result{Outcome: iotpay.OutcomePaid, Status: 2}
}
func (nopGateway) QueryOrder(context.Context, iotpay.QueryRequest) iotpay.Result {
	return iotpay.Result{Outcome: iotpay.OutcomePaid, Status: 2}
}
func (nopGateway) RefundOrder(context.Context, iotpay.RefundRequest) iotpay.Result {
	return iotpay.Result{Outcome: iotpay.OutcomeRefunded}
}

func TestSystemdReadyAndWatchdog(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "100000") // pings every 50 ms

	jr, err := journal.Open(filepath.Join(dir, "j.db"), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer jr.Close()
	gj := &gateJournal{Journal: jr, openGate: make(chan struct{})}
	wallets, _ := payment.NewWallets(payment.DefaultWalletRules())
	term, err := payment.New(payment.DefaultConfig(), payment.Deps{Gateway: nopGateway{}, Journal: gj, Wallets: wallets, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	termDone := make(chan error, 1)
	go func() { termDone <- term.Run(ctx) }()
	// The runner's log tells the test when it has seen the loop wedged.
	seen, logs := observer.New(zap.ErrorLevel)
	sd := systemdRunner(term, zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), seen)))
	sdDone := make(chan error, 1)
	go func() { sdDone <- sd.run(ctx) }()

	// Recovery is held back: no READY=1 yet.
	select {
	case m := <-msgs:
		t.Fatalf("notified %q before recovery", m)
	case <-time.After(300 * time.Millisecond):
	}
	close(gj.openGate)
	next := func() string {
		select {
		case m := <-msgs:
			return m
		case <-time.After(2 * time.Second):
			return ""
		}
	}
	if m := next(); !strings.Contains(m, "READY=1") {
		t.Fatalf("first notification %q, want READY=1", m)
	}
	pings := 0
	for i := 0; i < 3; i++ {
		if m := next(); strings.Contains(m, "WATCHDOG=1") && strings.Contains(m, "STATUS=lane IDLE") {
			pings++
		}
	}
	if pings != 3 {
		t.Fatalf("%d watchdog pings while healthy", pings)
	}
	// Wedge the main loop inside a scan: the pings must stop, so systemd
	// would kill and restart scanpay.
	gate := make(chan struct{})
	gj.mu.Lock()
	gj.codeGate = gate
	gj.mu.Unlock()
	term.RequestSale(ctx, payment.SaleRequest{Amount: 100})
	go term.Scan(ctx, payment.Code{Text: "134567890123456789"})
	// A ping answered just before the wedge may still be notified. Once the
	// runner logs a failed ping, every earlier notification is in the
	// socket; a marker sent now queues behind them, and what follows the
	// marker was sent while the loop was stuck.
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessageSnippet("withholding the watchdog ping").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the runner never noticed the wedged loop")
		}
		time.Sleep(2 * time.Millisecond)
	}
	mark, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	mark.Write([]byte("MARK"))
	mark.Close()
	for m := next(); m != "MARK"; m = next() {
		if m == "" {
			t.Fatal("marker lost")
		}
	}
	select {
	case m := <-msgs:
		if strings.Contains(m, "WATCHDOG=1") {
			t.Fatalf("watchdog ping %q while the loop is stuck", m)
		}
	case <-time.After(500 * time.Millisecond):
	}
	close(gate)
	if m := next(); !strings.Contains(m, "WATCHDOG=1") {
		t.Fatalf("no ping after the loop recovered: %q", m)
	}
	cancel()
	<-termDone
	<-sdDone
}
