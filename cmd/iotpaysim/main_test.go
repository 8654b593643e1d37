package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/scanpay/scanpay/payment/iotpay"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is written by the server goroutine and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServeAndStop(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "key")
	if err := os.WriteFile(keyPath, []byte("SECRETKEY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var logs syncBuffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--mch-id", "42", "--key-file", keyPath}, pw, &logs)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	url := strings.Fields(line)[3]
	c, err := iotpay.New(iotpay.Config{BaseURL: url, MchID: "42", Key: "SECRETKEY", JobNo: "j", NotifyURL: "n",
		Subject: "s", Body: "b", ClientIP: "127.0.0.1", Timeout: 5 * time.Second, RequireSignedReplies: true})
	if err != nil {
		t.Fatal(err)
	}
	res := c.CreateOrder(ctx, iotpay.CreateRequest{MchOrderNo: "X1", ChannelID: iotpay.ChannelWeChat, Currency: "CAD", Amount: 2865, IdentityCode: "134567890123456789"})
	if res.Outcome != iotpay.OutcomePaid {
		t.Fatalf("create: %+v", res)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if out := logs.String(); strings.Contains(out, "134567890123456789") || !strings.Contains(out, "13************6789") || strings.Contains(out, "SECRETKEY") {
		t.Fatalf("logs must show the masked code only:\n%s", out)
	}
}

func TestUsage(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, &out); code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	if !strings.Contains(out.String(), "--key-file") || !strings.Contains(out.String(), "57") {
		t.Fatalf("help does not explain flags and scenarios:\n%s", out.String())
	}
	out.Reset()
	if code := run(context.Background(), nil, &out, &out); code != 2 {
		t.Fatalf("missing key file exit %d", code)
	}
	if code := run(context.Background(), []string{"--key-file", "/nonexistent/key"}, &out, &out); code != 2 {
		t.Fatalf("unreadable key file exit %d", code)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "key")
	os.WriteFile(keyPath, []byte("K\n"), 0o600)
	statePath := filepath.Join(dir, "ledger.json")
	start := func() (string, context.CancelFunc, chan int) {
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--mch-id", "1", "--key-file", keyPath, "--state", statePath}, pw, io.Discard)
			pw.Close()
		}()
		line, err := bufio.NewReader(pr).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		go io.Copy(io.Discard, pr)
		return strings.Fields(line)[3], cancel, done
	}
	url, stop, done := start()
	c, _ := iotpay.New(iotpay.Config{BaseURL: url, MchID: "1", Key: "K", JobNo: "j", NotifyURL: "n", Subject: "s", Body: "b", ClientIP: "127.0.0.1", Timeout: 5 * time.Second})
	if r := c.CreateOrder(context.Background(), iotpay.CreateRequest{MchOrderNo: "P1", ChannelID: iotpay.ChannelWeChat, Currency: "CAD", Amount: 2865, IdentityCode: "134567890123456789"}); r.Outcome != iotpay.OutcomePaid {
		t.Fatal(r)
	}
	// Saved before the reply left: the ledger has it the moment the client
	// does, so a power cut right after the reply cannot lose it.
	if data, err := os.ReadFile(statePath); err != nil || !strings.Contains(string(data), `"P1"`) {
		t.Fatalf("ledger when the reply came: %s %v", data, err)
	}
	stop()
	<-done
	url, stop, done = start()
	defer func() { stop(); <-done }()
	c, _ = iotpay.New(iotpay.Config{BaseURL: url, MchID: "1", Key: "K", JobNo: "j", NotifyURL: "n", Subject: "s", Body: "b", ClientIP: "127.0.0.1", Timeout: 5 * time.Second})
	if r := c.QueryOrder(context.Background(), iotpay.QueryRequest{MchOrderNo: "P1"}); r.Outcome != iotpay.OutcomePaid {
		t.Fatalf("after restart: %+v", r)
	}
}

func TestUnsavableLedgerAnswers503(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "key")
	os.WriteFile(keyPath, []byte("K\n"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--mch-id", "1", "--key-file", keyPath, "--state", filepath.Join(dir, "gone", "ledger.json")}, pw, io.Discard)
		pw.Close()
	}()
	defer func() { cancel(); <-done }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	c, _ := iotpay.New(iotpay.Config{BaseURL: strings.Fields(line)[3], MchID: "1", Key: "K", JobNo: "j", NotifyURL: "n", Subject: "s", Body: "b", ClientIP: "127.0.0.1", Timeout: 5 * time.Second})
	r := c.CreateOrder(context.Background(), iotpay.CreateRequest{MchOrderNo: "P1", ChannelID: iotpay.ChannelWeChat, Currency: "CAD", Amount: 2865, IdentityCode: "134567890123456789"})
	if r.Outcome == iotpay.OutcomePaid {
		t.Fatalf("paid reply from a simulator that could not save it: %+v", r)
	}
}
