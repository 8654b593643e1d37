// Command iotpaysim serves the IOTPay gateway simulator over HTTP, for the
// demo, manual tests and the VM end-to-end test. Amounts pick scenarios by
// their last two digits (see --help).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/scanpay/scanpay/payment/iotpaysim"
)

const scenarioHelp = `Scenarios (last two digits of the amount in cents):
  00-49  paid at once (status 2 in the create_order reply); other endings too
  51     declined: resCode FAIL, "insufficient balance"
  52     customer typing a password: status 1, paid on the 3rd query
  53     status 1, then cancelled by the customer (9) on the 2nd query
  54     status 1 for 90 s, then paid (a late payment)
  55     order created and paid, but the create_order reply is lost
  56     HTTP 502 before anything is created
  57     create_order answers only after 40 s; the order is paid
  58     query_order returns malformed JSON twice, then a paid reply
  59     replies carry a wrong sign
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("iotpaysim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8088", "address to listen on")
	mchID := fs.String("mch-id", "10000576", "merchant id the simulator accepts")
	keyFile := fs.String("key-file", "", "file holding the merchant key (trailing whitespace ignored); required")
	jsonLogs := fs.Bool("json", false, "log JSON instead of console text")
	statePath := fs.String("state", "", "keep the ledger in this file across restarts (written after every request)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: iotpaysim --key-file PATH [--listen ADDR] [--mch-id ID]\n\n"+
			"Serves /v1/create_order, /v1/query_order and /v1/refund_order like IOTPay,\n"+
			"verifying signatures with the merchant key and keeping an in-memory ledger.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprint(stderr, "\n"+scenarioHelp)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *keyFile == "" || *mchID == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	raw, err := os.ReadFile(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "iotpaysim: read key file: %v\n", err)
		return 2
	}
	key := strings.TrimSpace(string(raw))
	if key == "" {
		fmt.Fprintf(stderr, "iotpaysim: key file %s is empty\n", *keyFile)
		return 2
	}
	log := newLogger(stderr, *jsonLogs)
	defer func() { _ = log.Sync() }()

	sim := iotpaysim.New(iotpaysim.Options{MchID: *mchID, Key: key, Logger: log})
	var handler http.Handler = sim
	if *statePath != "" {
		if data, err := os.ReadFile(*statePath); err == nil {
			if err := sim.Restore(data); err != nil {
				fmt.Fprintf(stderr, "iotpaysim: %s: %v\n", *statePath, err)
				return 1
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "iotpaysim: %v\n", err)
			return 1
		}
		handler = persisting{sim: sim, path: *statePath, log: log, mu: &sync.Mutex{}}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "iotpaysim: listen: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "iotpaysim listening on http://%s (merchant %s)\n", ln.Addr(), *mchID)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		fmt.Fprintf(stderr, "iotpaysim: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	<-errc
	return 0
}

func newLogger(w io.Writer, asJSON bool) *zap.Logger {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if asJSON {
		enc = zapcore.NewJSONEncoder(encCfg)
	} else {
		enc = zapcore.NewConsoleEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), zap.InfoLevel)).Named("iotpaysim")
}

// persisting saves the ledger after every request, durably (write, fsync,
// rename, fsync of the folder), before the reply leaves, so the simulator
// outlives a power cut as a real gateway does: nothing a client was told is
// forgotten. A ledger it cannot save answers 503, which a client treats as
// unknown.
type persisting struct {
	sim  *iotpaysim.Sim
	path string
	log  *zap.Logger
	mu   *sync.Mutex
}

func (p persisting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reply := &heldReply{header: w.Header()}
	p.sim.ServeHTTP(reply, r)
	if err := p.save(); err != nil {
		p.log.Error("saving the ledger failed", zap.Error(err))
		http.Error(w, "ledger not saved", http.StatusServiceUnavailable)
		return
	}
	if reply.status == 0 {
		reply.status = http.StatusOK
	}
	w.WriteHeader(reply.status)
	w.Write(reply.body.Bytes())
}

// heldReply keeps a reply until the ledger is saved.
type heldReply struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldReply) Header() http.Header { return h.header }
func (h *heldReply) WriteHeader(code int) {
	if h.status == 0 {
		h.status = code
	}
}
func (h *heldReply) Write(b []byte) (int, error) {
	h.WriteHeader(http.StatusOK)
	return h.body.Write(b)
}

func (p persisting) save() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	path := p.path
	data, err := p.sim.Snapshot()
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	// The rename is durable only once its folder is.
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}
