// Command fakeecr plays a cash register speaking Concert E+: it sends one
// sale (or refund) over a serial port, pty or TCP, waits for the terminal's
// result and prints it. Technicians use it to check a link; tests and the
// demo use it to drive scanpay.
//
// Exit status: 0 approved, 3 refused, 4 not verified, 1 link failure,
// 2 bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/scanpay/scanpay/device/serial"
	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/ecr/ecrtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fakeecr", flag.ContinueOnError)
	fs.SetOutput(stderr)
	serialPath := fs.String("serial", "", "serial port or pty of the terminal")
	tcpAddr := fs.String("tcp", "", "host:port of a terminal listening on TCP")
	baud := fs.Int("baud", 9600, "baud rate (serial)")
	dataBits := fs.Int("data-bits", 8, "7 or 8 (serial)")
	parity := fs.String("parity", "none", "none, even or odd (serial)")
	amount := fs.Int64("amount", 0, "amount in cents (2865 = 28.65); required")
	currency := fs.String("currency", "124", "ISO 4217 numeric currency: 124 CAD, 840 USD")
	pos := fs.String("pos", "01", "POS number")
	private := fs.String("private", "", "the register's reference, up to 10 characters")
	refund := fs.Bool("refund", false, "send a refund (type 2) instead of a sale")
	short := fs.Bool("short", false, "ask for the short (25-character) answer")
	immediate := fs.Bool("immediate", false, "ask for an immediate answer (A011)")
	wait := fs.Duration("wait", 120*time.Second, "how long to wait for the result")
	timeout := fs.Duration("timeout", 3*time.Second, "byte/frame answer timeout")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fakeecr (--serial PATH | --tcp HOST:PORT) --amount CENTS [flags]\n\n"+
			"Sends a Concert E+ payment request as a cash register does and prints the result.\n"+
			"Exit status: 0 approved, 3 refused, 4 not verified, 1 link failure, 2 bad usage.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if (*serialPath == "") == (*tcpAddr == "") || *amount <= 0 || *amount > 99999999 || len(*private) > 10 || len(*pos) != 2 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "fakeecr: give one of --serial or --tcp, an --amount of 1–99999999 cents, a two-digit --pos and a --private of at most 10 characters")
		return 2
	}
	var conn interface {
		io.ReadWriteCloser
		SetReadDeadline(time.Time) error
	}
	if *serialPath != "" {
		f, err := serial.OpenTTY(serial.PortConfig{Path: *serialPath, Baud: *baud, DataBits: *dataBits, Parity: *parity})
		if err != nil {
			fmt.Fprintln(stderr, "fakeecr:", err)
			return 1
		}
		conn = f
	} else {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", *tcpAddr)
		if err != nil {
			fmt.Fprintln(stderr, "fakeecr:", err)
			return 1
		}
		conn = c
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	req := ecr.Request{POS: *pos, Amount: *amount, FullAnswer: !*short, Mode: '1', Type: ecr.TypePurchase,
		Currency: *currency, Private: fmt.Sprintf("%-10s", *private), Immediate: *immediate}
	kind := "sale"
	if *refund {
		req.Type, kind = ecr.TypeRefund, "refund"
	}
	reg := &ecrtest.Register{Conn: conn, Timeout: *timeout}
	if err := reg.Send(req); err != nil {
		fmt.Fprintf(stderr, "fakeecr: sending the %s: %v\n", kind, err)
		return 1
	}
	fmt.Fprintf(stdout, "sent %s of %d.%02d (currency %s, POS %s, reference %q); waiting for the result\n",
		kind, *amount/100, *amount%100, *currency, *pos, *private)
	res, err := reg.Receive(*wait, req.FullAnswer)
	if err != nil {
		fmt.Fprintf(stderr, "fakeecr: %v\n", err)
		return 1
	}
	words := map[byte]string{ecr.StatusApproved: "approved", ecr.StatusRefused: "refused", ecr.StatusNotVerified: "not verified"}
	fmt.Fprintf(stdout, "result: status %c (%s), amount %d.%02d, currency %s, POS %s, reference %q",
		res.Status, words[res.Status], res.Amount/100, res.Amount%100, res.Currency, res.POS, strings.TrimRight(res.Private, " "))
	if r := strings.TrimSpace(res.Report); r != "" {
		fmt.Fprintf(stdout, ", report %q", r)
	}
	fmt.Fprintln(stdout)
	switch res.Status {
	case ecr.StatusApproved:
		return 0
	case ecr.StatusRefused:
		return 3
	}
	return 4
}
