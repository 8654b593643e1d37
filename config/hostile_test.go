package config

// The hostile-input suite for the config and the merchant key (issue 16,
// items 3 and 4): each test asserts a bound or an exact refusal.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// manyUnknownKeys is a config of n unknown keys in a known table.
func manyUnknownKeys(n int) []byte {
	var b strings.Builder
	b.WriteString(minimal + "[terminal]\n")
	for i := range n {
		fmt.Fprintf(&b, "k%06d = 1\n", i)
	}
	return []byte(b.String())
}

// A file of unknown keys as large as a config may be is reported in
// bounded time: the report is linear in the keys (it was quadratic:
// 16 000 keys took 71 s, 80 000 would take half an hour). The
// deadline is the bound, tens of times what the linear code needs even
// under the race detector on a loaded machine.
func TestHostileConfigUnknownKeysLinear(t *testing.T) {
	data := manyUnknownKeys(80000)
	if len(data) > MaxSize {
		t.Fatalf("test config is %d bytes, over the limit", len(data))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := parse(ctx, data)
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("not a list of problems (bound exceeded?): %v", err)
	}
	if len(errs) != maxUnknownReported+1 {
		t.Fatalf("%d problems reported, want the first %d and a count", len(errs), maxUnknownReported)
	}
	if errs[0].Key != "terminal.k000000" || errs[0].Line != 9 {
		t.Errorf("first: %+v", errs[0])
	}
	if want := fmt.Sprintf("… and %d more unknown keys", 80000-maxUnknownReported); errs[len(errs)-1].Msg != want {
		t.Errorf("last: %q, want %q", errs[len(errs)-1].Msg, want)
	}
}

// Keys inside an unknown table are not reported one by one.
func TestUnknownTableReportedOnce(t *testing.T) {
	_, err := Parse([]byte(minimal + "[nosuch]\na = 1\nb = 2\n[nosuch.deeper]\nc = 3\n"))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Key != "nosuch" || errs[0].Line != 8 {
		t.Fatalf("%v", err)
	}
}

// Parsing stops when its context ends (SIGTERM during start-up).
func TestHostileConfigInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := parse(ctx, manyUnknownKeys(10000)); !errors.Is(err, context.Canceled) {
		t.Fatalf("parse with an ended context: %v", err)
	}
	path := filepath.Join(t.TempDir(), "scanpay.toml")
	os.WriteFile(path, manyUnknownKeys(10000), 0o600)
	if _, err := Load(ctx, path); !errors.Is(err, context.Canceled) {
		t.Fatalf("load with an ended context: %v", err)
	}
}

// A file over 1 MiB, a FIFO and a device are refused at once, without
// being read: the sparse file would take minutes and gigabytes to read.
func TestHostileConfigTooLargeOrNotAFile(t *testing.T) {
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.toml")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(8 << 30) // 8 GiB, sparse
	f.Close()
	fifo := filepath.Join(dir, "fifo.toml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{huge, "the file is 8589934592 bytes; a scanpay config is at most 1048576 (1 MiB)"},
		{fifo, "not a regular file (a FIFO)"},
		{"/dev/zero", "not a regular file (a character device)"},
		{dir, "not a regular file (a directory)"},
	} {
		done := make(chan error, 1)
		go func() { _, err := Load(context.Background(), tc.path); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want %q", tc.path, err, tc.want)
			}
		case <-time.After(30 * time.Second):
			// Unblock the open so the goroutine ends.
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			t.Fatalf("%s: Load blocked", tc.path)
		}
	}
	// Parse itself refuses oversized input too (fuzzers and callers with
	// bytes in hand).
	if _, err := Parse(make([]byte, MaxSize+1)); err == nil || !strings.Contains(err.Error(), "at most 1048576") {
		t.Fatalf("oversized bytes: %v", err)
	}
}

// No message config produces quotes a value from the file: a marker put
// in every value never comes back, while keys and lines do.
func TestHostileConfigMessagesQuoteNothing(t *testing.T) {
	const m = "LEAKMARK"
	tests := []struct{ extra, key string }{
		{"[terminal]\nid = \"LEAKMARK x\"", "terminal.id"},
		{"[terminal]\ncurrency = \"LEAKMARK\"", "terminal.currency"},
		{"[terminal]\nmax_amount = 987654321987", "terminal.max_amount"},
		{"[terminal]\ncode_timeout = \"LEAKMARK\"", "terminal.code_timeout"},
		{"[terminal]\nmax_amount = 99999999999999999999", "terminal.max_amount"},
		{"[terminal]\nmax_amount = \"LEAKMARK\"", ""},
		{"[gateway]\nurl = \"http://LEAKMARK.example\"", "gateway.url"},
		{"[gateway]\nurl = \"LEAKMARK\"", "gateway.url"},
		{"[gateway]\nclient_ip = \"LEAKMARK\"", "gateway.client_ip"},
		{"[gateway]\npoll_attempts = 987654321", "gateway.poll_attempts"},
		{"[gateway]\ntimeout = \"987654321s\"", "gateway.timeout"},
		{"[scanner]\ndriver = \"LEAKMARK\"", "scanner.driver"},
		{"[scanner]\nvendor_product = \"LEAKMARK\"", "scanner.vendor_product"},
		{"[scanner]\nterminators = [\"LEAKMARK\"]", "scanner.terminators"},
		{"[scanner]\ndriver = \"serial\"\nline_ending = \"LEAKMARK\"", "scanner.line_ending"},
		{"[scanner]\ndriver = \"serial\"\nparity = \"LEAKMARK\"", "scanner.parity"},
		{"[scanner]\ndriver = \"serial\"\nbaud = 987654321", "scanner.baud"},
		{"[scanner]\ndriver = \"serial\"\ndata_bits = 987654321", "scanner.data_bits"},
		{"[scanner]\nmax_length = 987654321", "scanner.max_length"},
		{"[[wallet]]\nname = \"LEAKMARK\"\nchannel = \"LEAKMARK\"\nprefixes = [\"LEAKMARK\"]\nmin_length = 1\nmax_length = 2", "wallet"},
		{"[keypad]\ndevice = \"/x\"\nmax_digits = 987654321", "keypad.max_digits"},
		{"[ecr]\nprotocol = \"LEAKMARK\"\nlisten = \"127.0.0.1:1\"", "ecr.protocol"},
		{"[ecr]\nlisten = \"LEAKMARK\"", "ecr.listen"},
		{"[ecr]\nlisten = \"127.0.0.1:1\"\npos_number = \"LEAKMARK\"", "ecr.pos_number"},
		{"[ecr]\nlisten = \"127.0.0.1:1\"\nallow_from = [\"LEAKMARK\"]", "ecr.allow_from"},
		{"[display]\ndriver = \"LEAKMARK\"", "display.driver"},
		{"[display]\nwidth = 987654321", "display.width"},
		{"[display]\nbrightness = 987654321", "display.brightness"},
		{"[beeper]\ndriver = \"LEAKMARK\"", "beeper.driver"},
		{"[beeper]\ndriver = \"gpio\"\nchip = \"x\"\nline = 987654321", "beeper.line"},
		{"[metrics]\nlisten = \"LEAKMARK\"", "metrics.listen"},
		{"[log]\nlevel = \"LEAKMARK\"", "log.level"},
		{"[log]\nformat = \"LEAKMARK\"", "log.format"},
	}
	for _, tc := range tests {
		t.Run(tc.extra, func(t *testing.T) {
			_, err := Parse([]byte(mergeTOML(minimal, tc.extra)))
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if strings.Contains(msg, m) || strings.Contains(msg, "987654321") || strings.Contains(msg, "99999999999999999999") {
				t.Errorf("message quotes the file: %s", msg)
			}
			if tc.key != "" && !strings.Contains(msg, tc.key) {
				t.Errorf("message does not name %s: %s", tc.key, msg)
			}
		})
	}
	// The [fleet] section and head office's hq.toml follow the same rule.
	for _, extra := range []string{
		"[fleet]\nservers = [\"LEAKMARK\"]",
		"[fleet]\nservers = [\"nats://LEAKMARK.example:4222\"]\ncredentials = \"c\"",
		"[fleet]\nservers = [\"tls://h:4222\"]\ncredentials = \"c\"\nstream = \"LEAK MARK\"\nsubject_prefix = \"LEAKMARK*\"\nmax_backlog = 987654321987\nheartbeat = \"987654321s\"",
	} {
		if _, err := Parse([]byte(mergeTOML(minimal, extra))); err == nil || strings.Contains(err.Error(), m) || strings.Contains(err.Error(), "LEAK MARK") || strings.Contains(err.Error(), "987654321") {
			t.Errorf("%q: %v", extra, err)
		}
	}
	for _, hq := range []string{
		"[nats]\nservers = [\"LEAKMARK\"]\nstream = \"LEAK MARK\"\ndurable = \"LEAK MARK\"\nsubject_prefix = \"LEAKMARK*\"\nreplicas = 987654321\nmax_age = \"LEAKMARK\"",
		"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\nbatch = 987654321\nack_wait = \"987654321s\"\n[embedded]\nlisten = \"LEAKMARK\"\n[report]\ntimezone = \"LEAKMARK\"\n[metrics]\nlisten = \"LEAKMARK\"\n[log]\nlevel = \"LEAKMARK\"\nformat = \"LEAKMARK\"",
		"[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n[lanes]\nsilent_after = \"LEAKMARK\"\nLEAKMARK = 1",
		"postgres:LEAKMARK\n",
	} {
		if _, err := ParseHQ([]byte(hq)); err == nil || strings.Contains(err.Error(), m) || strings.Contains(err.Error(), "LEAK MARK") || strings.Contains(err.Error(), "987654321") {
			// An unknown key is named: that one may carry the marker.
			if err == nil || !strings.Contains(err.Error(), "LEAKMARK (line 5): unknown key") {
				t.Errorf("hq %q: %v", hq, err)
			}
		}
	}
	// Files that are not TOML at all: a password file, a private key, an
	// unterminated string, a broken header. Only the line is named.
	for _, data := range []string{
		"root:LEAKMARK:19000:0:99999:7:::\n",
		"-----BEGIN PRIVATE KEY-----\nMIIEvLEAKMARKQIBADANBg\n-----END PRIVATE KEY-----\n",
		"[gateway]\nmch_id = \"LEAKMARK\n",
		"[LEAKMARK\n",
		"x = LEAKMARK\n",
		"LEAKMARK LEAKMARK = 1\n",
		"[terminal]\nid = 'LEAKMARK' 'LEAKMARK'\n",
	} {
		_, err := Parse([]byte(data))
		if err == nil || strings.Contains(err.Error(), m) || !strings.Contains(err.Error(), "line ") {
			t.Errorf("%q: %v", data, err)
		}
	}
	// Checks after parsing (devices, warnings, the key) quote nothing
	// either.
	cfg, err := Parse([]byte(mergeTOML(minimal, "[ecr]\nlisten = \"0.0.0.0:8800\"\nallow_from = [\"10.9.8.7\"]\n[metrics]\nlisten = \"0.0.0.0:9464\"")))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Scanner.Device = "/nonexistent/LEAKMARK"
	cfg.Journal.Path = "/nonexistent/LEAKMARK/j.db"
	cfg.Gateway.KeyFile = "/nonexistent/LEAKMARK.key"
	all := cfg.CheckDevices().Error() + strings.Join(cfg.Warnings(), "\n")
	if _, _, err := cfg.LoadKey(func(string) string { return "" }); err != nil {
		all += err.Error()
	}
	if strings.Contains(all, m) || strings.Contains(all, "10.9.8.7") || strings.Contains(all, "0.0.0.0") {
		t.Errorf("a later check quotes the file:\n%s", all)
	}
}

// The key file and the systemd credential accept the key with at most
// one final line ending, and refuse everything else with what to fix.
func TestHostileKeyFile(t *testing.T) {
	const key = "TESTKEY1234567890"
	ok := []string{key, key + "\n", key + "\r\n"}
	bad := []struct{ data, want string }{
		{"\xEF\xBB\xBF" + key + "\n", "byte-order mark"},
		{" " + key + "\n", "starts with whitespace"},
		{"\t" + key, "starts with whitespace"},
		{"\n" + key, "starts with whitespace"},
		{key + " \n", "ends with whitespace"},
		{key + "\n\n", "ends with whitespace"},
		{key + "\t", "ends with whitespace"},
		{key + "\nSECOND\n", "spans several lines"},
		{`"` + key + `"`, "character 1 of 19 is not a letter or digit"},
		{"key=" + key, "character 4 of 21 is not a letter or digit"},
		{"TESTKEY 1234567890", "character 8 of 18"},
		{"TESTKEY\u00a01234567890", "character 8 of 19"},
		{"SHORT12", "is 7 characters"},
		{strings.Repeat("A", 129), "is 129 characters"},
		{"", "empty"},
		{"\n", "empty"},
		{"   \n", "empty"},
	}
	dir := t.TempDir()
	noEnv := func(string) string { return "" }
	credEnv := func(k string) string {
		if k == "CREDENTIALS_DIRECTORY" {
			return dir
		}
		return ""
	}
	cfg, _ := Parse([]byte(minimal))
	cfg.Gateway.KeyFile = filepath.Join(dir, "merchant.key")
	cred := filepath.Join(dir, CredentialName)
	for _, data := range ok {
		os.WriteFile(cfg.Gateway.KeyFile, []byte(data), 0o600)
		if got, _, err := cfg.LoadKey(noEnv); err != nil || got != key {
			t.Errorf("%q: %q %v", data, got, err)
		}
	}
	for _, tc := range bad {
		for _, where := range []string{"file", "credential"} {
			path, env := cfg.Gateway.KeyFile, noEnv
			if where == "credential" {
				path, env = cred, credEnv
			}
			os.Remove(path)
			os.WriteFile(path, []byte(tc.data), 0o600)
			_, _, err := cfg.LoadKey(env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s %q: %v, want %q", where, tc.data, err, tc.want)
			} else if strings.Contains(err.Error(), "TESTKEY") || strings.Contains(err.Error(), "SHORT12") {
				t.Errorf("%s %q: the message quotes the key: %v", where, tc.data, err)
			}
			os.Remove(path)
		}
	}
	// A FIFO (it would block start-up until someone writes to it), a
	// device and a 10 GB sparse file (it would be read whole) are refused
	// at once.
	fifo := filepath.Join(dir, "fifo.key")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.key")
	f, _ := os.OpenFile(huge, os.O_CREATE|os.O_WRONLY, 0o600)
	f.Truncate(10 << 30)
	f.Close()
	for _, tc := range []struct{ path, want string }{
		{fifo, "not a regular file (a FIFO)"},
		{"/dev/zero", "not a regular file (a character device)"},
		{huge, "the file is 10737418240 bytes, far longer than a merchant key"},
	} {
		for _, where := range []string{"file", "credential"} {
			c, env := cfg, noEnv
			c.Gateway.KeyFile = tc.path
			if where == "credential" {
				os.Remove(cred)
				if err := os.Symlink(tc.path, cred); err != nil {
					t.Fatal(err)
				}
				env = credEnv
			}
			done := make(chan error, 1)
			go func() { _, _, err := c.LoadKey(env); done <- err }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s %s: %v, want %q", where, tc.path, err, tc.want)
				}
			case <-time.After(30 * time.Second):
				if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					w.Close()
				}
				t.Fatalf("%s %s: LoadKey blocked", where, tc.path)
			}
			os.Remove(cred)
		}
	}
}

func FuzzCheckKey(f *testing.F) {
	for _, s := range []string{"TESTKEY1234567890\n", "TESTKEY1234567890\r\n", "\xEF\xBB\xBFTESTKEY1234567890", " K", "K \n", "A\nB", "", "\r\n", "12345678\n\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := checkKey(data)
		if err != nil {
			if key != "" || err.Error() == "" {
				t.Fatalf("refused with key %q, error %v", key, err)
			}
			return
		}
		if len(key) < MinKeyLength || len(key) > MaxKeyLength {
			t.Fatalf("accepted a key of %d characters", len(key))
		}
		for i := 0; i < len(key); i++ {
			if !isKeyChar(key[i]) {
				t.Fatalf("accepted %q", key)
			}
		}
		if s := string(data); s != key && s != key+"\n" && s != key+"\r\n" {
			t.Fatalf("accepted %q as %q: only one final line ending may follow the key", data, key)
		}
	})
}
