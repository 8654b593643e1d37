package fleet_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/scanpay/scanpay/fleet"
	"github.com/scanpay/scanpay/fleet/event"
	"github.com/scanpay/scanpay/fleet/fleettest"
	"github.com/scanpay/scanpay/payment/journal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type lane struct {
	jr  *journal.Journal
	out *journal.Outbox
	n   int
}

func newLane(t *testing.T, id string) *lane {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.db")
	jr, err := journal.Open(path, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { jr.Close() })
	if err := jr.SetFleet(context.Background(), id, 1000); err != nil {
		t.Fatal(err)
	}
	out, err := journal.OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	return &lane{jr: jr, out: out}
}

// sale writes one paid order (two events).
func (l *lane) sale(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	l.n++
	o, err := l.jr.AddOrder(ctx, journal.NewOrder{TerminalID: "L01", Amount: 100, Currency: "CAD", Channel: "WX_MICROPAY",
		CodeMasked: "13****6789", CodeHash: fmt.Sprint("h", l.n), Source: "keypad"}, func(n uint64) string { return fmt.Sprintf("L01-%06d", n) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.jr.Transition(ctx, o.MchOrderNo, journal.StateSubmitting, journal.StatePaid, journal.Update{Status: 2, PayOrderID: "AM"}); err != nil {
		t.Fatal(err)
	}
}

type recorder struct {
	backlog, dropped, published atomic.Int64
	up                          atomic.Bool
}

func (o *recorder) FleetBacklog(n int64, _ time.Duration, d int64) {
	o.backlog.Store(n)
	o.dropped.Store(d)
}
func (o *recorder) FleetPublished(n int)   { o.published.Add(int64(n)) }
func (o *recorder) FleetConnected(up bool) { o.up.Store(up) }

func runPublisher(t *testing.T, cfg fleet.Config, out fleet.Outbox) *fleet.Publisher {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t)
	}
	cfg.Link.ReconnectMin, cfg.Link.ReconnectMax = 20*time.Millisecond, 200*time.Millisecond
	cfg.RetryMin, cfg.RetryMax, cfg.Poll, cfg.AckWait = 20*time.Millisecond, 200*time.Millisecond, 50*time.Millisecond, 2*time.Second
	p, err := fleet.New(cfg, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return p
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func createStream(t *testing.T, url string, opts ...nats.Option) (jetstream.Stream, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	st, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "SCANPAY", Subjects: []string{"scanpay.lane.*.events"}})
	if err != nil {
		t.Fatal(err)
	}
	return st, nc
}

// NATS down: sales go on, the backlog stays on disk and is reported; once
// NATS is up the events go, in order, each with its de-duplication id.
func TestBacklogWhileDownThenDelivered(t *testing.T) {
	l := newLane(t, "L01")
	port := freePort(t)
	obs := &recorder{}
	runPublisher(t, fleet.Config{Lane: "L01", Link: fleet.Link{Servers: []string{fmt.Sprintf("nats://127.0.0.1:%d", port)}},
		Stream: "SCANPAY", Observer: obs}, l.out)
	for i := 0; i < 25; i++ {
		l.sale(t) // never waits for the link
	}
	eventually(t, "backlog reported", func() bool { return obs.backlog.Load() == 50 })
	if obs.up.Load() {
		t.Fatal("link reported up with no server")
	}

	srv := fleettest.Start(t, 1, func(_ int, o *server.Options) { o.Port = port })
	st, _ := createStream(t, srv.URLs()[0])
	eventually(t, "backlog delivered", func() bool {
		s, _ := l.out.Stats(context.Background())
		return s.Backlog == 0 && obs.published.Load() == 50
	})
	if !obs.up.Load() {
		t.Fatal("link not reported up")
	}
	ctx := context.Background()
	for seq := uint64(1); seq <= 50; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := event.Parse(m.Data, "L01")
		if err != nil || e.Seq != seq || m.Header.Get(jetstream.MsgIDHeader) != event.MsgID("L01", seq) || m.Subject != "scanpay.lane.L01.events" {
			t.Fatalf("stream message %d: %+v %v %v", seq, e, m.Header, err)
		}
	}
	// Restarting the node keeps delivering what comes next.
	srv.Restart(0)
	l.sale(t)
	eventually(t, "delivered after a restart", func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 52
	})
}

// The heartbeat says who the lane is, its state, devices and backlog.
func TestHeartbeat(t *testing.T) {
	l := newLane(t, "L01")
	srv := fleettest.Start(t, 1, nil)
	nc, err := nats.Connect(srv.URLs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	beats := make(chan *nats.Msg, 10)
	sub, err := nc.ChanSubscribe("scanpay.lane.*.heartbeat", beats)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	nc.Flush()
	l.sale(t) // no stream: stays in the backlog
	runPublisher(t, fleet.Config{Lane: "L01", Link: fleet.Link{Servers: srv.URLs()}, Heartbeat: 50 * time.Millisecond, Version: "1.2.3",
		Status: func() fleet.Status {
			return fleet.Status{State: "IDLE", Devices: map[string]bool{"scanner": true, "ecr": false}}
		}}, l.out)
	for i := 0; i < 2; i++ {
		select {
		case m := <-beats:
			hb, err := event.ParseHeartbeat(m.Data, "L01")
			if err != nil {
				t.Fatal(err)
			}
			if hb.Version != "1.2.3" || hb.State != "IDLE" || !hb.Devices["scanner"] || hb.Devices["ecr"] || hb.Backlog != 2 || hb.LastSeq != 2 || hb.Oldest == nil {
				t.Fatalf("heartbeat %+v", hb)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no heartbeat")
		}
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// certs makes a CA and a server certificate for 127.0.0.1.
func certs(t *testing.T, dir string) (caFile string, server tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func seedFile(t *testing.T, dir, name string, kp nkeys.KeyPair, mode os.FileMode) string {
	t.Helper()
	seed, _ := kp.Seed()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, append(seed, '\n'), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// Over TLS with per-lane nkey credentials, and server permissions as the
// README documents them, a lane publishes to its own subject only: the
// same credentials used for another lane's subject store nothing.
func TestTLSCredentialsAndPermissions(t *testing.T) {
	dir := t.TempDir()
	caFile, cert := certs(t, dir)
	l1, _ := nkeys.CreateUser()
	admin, _ := nkeys.CreateUser()
	l1pub, _ := l1.PublicKey()
	adminPub, _ := admin.PublicKey()
	srv := fleettest.Start(t, 1, func(_ int, o *server.Options) {
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		o.TLS, o.TLSTimeout = true, 5
		o.Nkeys = []*server.NkeyUser{
			{Nkey: l1pub, Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"scanpay.lane.L01.>"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_L01.>"}}}},
			{Nkey: adminPub},
		}
	})
	url := srv.URLs()[0]
	adminSeed := seedFile(t, dir, "admin.nk", admin, 0o600)
	adminOpt, err := nats.NkeyOptionFromSeed(adminSeed)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := createStream(t, url, adminOpt, nats.RootCAs(caFile))

	creds := seedFile(t, dir, "l01.nk", l1, 0o600)
	// A credentials file others can read is refused before connecting.
	loose := seedFile(t, dir, "loose.nk", l1, 0o644)
	if _, err := (fleet.Link{Servers: []string{url}, Credentials: loose}).Options(); err == nil {
		t.Fatal("a world-readable credentials file was accepted")
	}
	if _, err := (fleet.Link{Servers: []string{url}, Credentials: filepath.Join(dir, "ca.pem")}).Options(); err == nil {
		t.Fatal("a file that is no credentials was accepted")
	}

	good := newLane(t, "L01")
	good.sale(t)
	runPublisher(t, fleet.Config{Lane: "L01", Link: fleet.Link{Servers: []string{url}, Credentials: creds, CAFile: caFile}, Stream: "SCANPAY"}, good.out)
	eventually(t, "own subject delivered", func() bool {
		s, _ := good.out.Stats(context.Background())
		return s.Backlog == 0
	})

	// L01's credentials configured as lane L02: the server refuses.
	rogue := newLane(t, "L02")
	rogue.sale(t)
	core, logs := observer.New(zap.WarnLevel)
	runPublisher(t, fleet.Config{Lane: "L02", Link: fleet.Link{Servers: []string{url}, Credentials: creds, CAFile: caFile}, Stream: "SCANPAY",
		Logger: zap.New(core)}, rogue.out)
	eventually(t, "the server refusing the publish", func() bool {
		for _, e := range logs.FilterMessage("fleet link error").All() {
			if strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "Permissions Violation for Publish to \"scanpay.lane.L02.events\"") {
				return true
			}
		}
		return false
	})
	s, _ := rogue.out.Stats(context.Background())
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Backlog != 2 || info.State.Msgs != 2 {
		t.Fatalf("another lane's subject: backlog %d, stream holds %d messages", s.Backlog, info.State.Msgs)
	}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		if m, err := st.GetMsg(context.Background(), seq); err == nil && m.Subject != "scanpay.lane.L01.events" {
			t.Fatalf("stored on %s", m.Subject)
		}
	}
	// Without the CA the server's certificate is not trusted.
	if _, err := nats.Connect(url, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}), adminOpt, nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("connected without trusting the CA")
	}
}
