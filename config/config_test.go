package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimal = `
[gateway]
mch_id = "10000576"
job_no = "cashier"
key_file = "/etc/scanpay/merchant.key"
[scanner]
device = "/dev/input/by-id/x"
`

func TestExampleParses(t *testing.T) {
	cfg, err := Load(context.Background(), "../deploy/scanpay.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Keypad == nil || cfg.ECR == nil || cfg.Beeper == nil || cfg.Metrics == nil {
		t.Fatal("the example must show every optional section")
	}
	if cfg.Gateway.PollInterval.Duration != 2*time.Second || cfg.ECR.Timeout.Duration != 3*time.Second {
		t.Fatalf("durations %+v", cfg.Gateway)
	}
	// Every field of every section appears in the example.
	data, _ := os.ReadFile("../deploy/scanpay.toml")
	for _, key := range []string{"id", "currency", "max_amount", "code_timeout", "result_time", "url", "mch_id", "job_no", "key_file",
		"subject", "body", "notify_url", "client_ip", "timeout", "poll_interval", "poll_attempts", "reconcile_for", "refund_late",
		"sale_limit", "require_clock_sync", "keep_results", "allow_from", "refund_window",
		"require_signed_replies", "driver", "device", "name", "vendor_product", "terminators", "idle_timeout", "max_length",
		"strip_aim", "baud", "data_bits", "parity", "line_ending", "max_digits", "protocol", "listen", "pos_number",
		"allow_refunds", "width", "brightness", "chip", "line", "active_low", "path", "level", "format", "prefixes", "min_length"} {
		if !strings.Contains(string(data), key+" =") {
			t.Errorf("example lacks %s", key)
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Terminal.ID != "LANE1" || cfg.Gateway.PollAttempts != 30 || cfg.Display.Driver != "none" || cfg.Keypad != nil || cfg.ECR != nil || cfg.Metrics != nil {
		t.Fatalf("%+v", cfg)
	}
	if len(cfg.WalletRules()) != 3 {
		t.Fatal("default wallet table")
	}
}

func TestUnknownKeysNamedWithLine(t *testing.T) {
	_, err := Parse([]byte(minimal + "\n[display]\ndriver = \"console\"\nwidht = 20\n\n[scaner]\ndevice = \"x\"\n"))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("got %v", err)
	}
	if errs[0].Key != "display.widht" || errs[0].Line != 11 {
		t.Errorf("first: %+v", errs[0])
	}
	if !strings.Contains(err.Error(), "scaner") {
		t.Errorf("second: %v", err)
	}
}

func TestSyntaxErrorLine(t *testing.T) {
	_, err := Parse([]byte("[terminal]\nid = \"A\"\nmax_amount = = 3\n"))
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("got %v", err)
	}
	_, err = Parse([]byte(minimal + "[terminal]\ncode_timeout = \"soon\"\n"))
	if err == nil || !strings.Contains(err.Error(), "terminal.code_timeout (line 9): not a duration") {
		t.Fatalf("got %v", err)
	}
	_, err = Parse([]byte(minimal + "[terminal]\nmax_amount = \"lots\"\n"))
	if err == nil {
		t.Fatal("string amount accepted")
	}
}

func TestValidationMessages(t *testing.T) {
	tests := []struct {
		extra, key, text string
	}{
		{"[terminal]\nid = \"has space\"", "terminal.id", "letters, digits"},
		{"[terminal]\ncurrency = \"EUR\"", "terminal.currency", "CAD or USD"},
		{"[terminal]\nmax_amount = 0", "terminal.max_amount", "cents"},
		{"[terminal]\ncode_timeout = \"1s\"", "terminal.code_timeout", "too short"},
		{"[terminal]\nresult_time = \"10ms\"", "terminal.result_time", "too short"},
		{"[gateway]\nurl = \"http://api.iotpaycloud.com\"", "gateway.url", "https"},
		{"[gateway]\nurl = \"nonsense\"", "gateway.url", "not a URL"},
		{"[gateway]\nmch_id = \"\"", "gateway.mch_id", "missing"},
		{"[gateway]\njob_no = \"\"", "gateway.job_no", "missing"},
		{"[gateway]\nsubject = \"\"", "gateway.subject", "1–64"},
		{"[gateway]\nbody = \"\"", "gateway.body", "1–255"},
		{"[gateway]\ntimeout = \"0s\"", "gateway.timeout", "between"},
		{"[gateway]\npoll_interval = \"10ms\"", "gateway.poll_interval", "100ms"},
		{"[gateway]\npoll_attempts = 0", "gateway.poll_attempts", "1–1000"},
		{"[gateway]\nreconcile_for = \"10s\"", "gateway.reconcile_for", "at least"},
		{"[gateway]\nclient_ip = \"ten\"", "gateway.client_ip", "not an IP"},
		{"[gateway]\nsale_limit = \"2m\"\n[ecr]\nlisten = \"127.0.0.1:1\"", "gateway.sale_limit", "120 s"},
		{"[gateway]\nsale_limit = \"5s\"", "gateway.sale_limit", "at least gateway.timeout"},
		{"[ecr]\nlisten = \"127.0.0.1:1\"\nkeep_results = \"5s\"", "ecr.keep_results", "between"},
		{"[ecr]\nlisten = \"127.0.0.1:1\"\nidle_timeout = \"0.5s\"", "ecr.idle_timeout", "between"},
		{"[ecr]\nlisten = \"127.0.0.1:1\"\nrefund_window = \"1s\"", "ecr.refund_window", "between"},
		{"[ecr]\nlisten = \"127.0.0.1:1\"\nallow_from = [\"192.168.1.300\"]", "ecr.allow_from", "not an address"},
		{"[scanner]\ndriver = \"bluetooth\"", "scanner.driver", "evdev"},
		{"[scanner]\ndevice = \"\"", "scanner.device", "by-id"},
		{"[scanner]\nvendor_product = \"zz\"", "scanner.vendor_product", "hex"},
		{"[scanner]\nterminators = [\"space\"]", "scanner.terminators", "enter"},
		{"[scanner]\nterminators = []", "scanner.terminators", "at least one"},
		{"[scanner]\ndriver = \"serial\"\nbaud = 9601", "scanner.baud", "standard"},
		{"[scanner]\ndriver = \"serial\"\ndata_bits = 5", "scanner.data_bits", "7 or 8"},
		{"[scanner]\ndriver = \"serial\"\nparity = \"mark\"", "scanner.parity", "none, even"},
		{"[scanner]\ndriver = \"serial\"\nline_ending = \"nul\"", "scanner.line_ending", "auto"},
		{"[scanner]\nidle_timeout = \"10s\"", "scanner.idle_timeout", "5s"},
		{"[scanner]\nmax_length = 2", "scanner.max_length", "8–256"},
		{"[[wallet]]\nchannel = \"X\"\nprefixes = [\"1a\"]\nmin_length = 1\nmax_length = 2", "wallet", "row 1 is not valid"},
		{"[keypad]\nmax_digits = 4", "keypad.device", "by-id"},
		{"[keypad]\ndevice = \"/x\"\nmax_digits = 9", "keypad.max_digits", "1–8"},
		{"[ecr]\nprotocol = \"opi\"\nlisten = \"127.0.0.1:1\"", "ecr.protocol", "concert"},
		{"[ecr]\nbaud = 9600", "ecr.device", "exactly one"},
		{"[ecr]\nlisten = \"8800\"", "ecr.listen", "host:port"},
		{"[ecr]\ndevice = \"/dev/x\"\ndata_bits = 6", "ecr.data_bits", "7 or 8"},
		{"[ecr]\nlisten = \"127.0.0.1:1\"\npos_number = \"1\"", "ecr.pos_number", "two digits"},
		{"[ecr]\nlisten = \"127.0.0.1:1\"\ntimeout = \"1ms\"", "ecr.timeout", "between"},
		{"[display]\ndriver = \"lcd\"", "display.driver", "escpos"},
		{"[display]\ndriver = \"escpos\"", "display.device", "serial port"},
		{"[display]\nwidth = 4", "display.width", "8–40"},
		{"[display]\nbrightness = 9", "display.brightness", "1–4"},
		{"[beeper]\ndriver = \"gpio\"", "beeper.chip", "label"},
		{"[beeper]\ndriver = \"gpio\"\nchip = \"x\"\nline = -1", "beeper.line", "offset"},
		{"[beeper]\ndriver = \"tone\"", "beeper.device", "pwm-beeper"},
		{"[beeper]\ndriver = \"bell\"", "beeper.driver", "display.driver"},
		{"[beeper]\ndriver = \"horn\"", "beeper.driver", "gpio, tone"},
		{"[journal]\npath = \"\"", "journal.path", "missing"},
		{"[metrics]\nlisten = \"9464\"", "metrics.listen", "host:port"},
		{"[log]\nlevel = \"loud\"", "log.level", "debug"},
		{"[log]\nformat = \"xml\"", "log.format", "json"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			// Later tables of the same name override the minimal ones.
			data := mergeTOML(minimal, tc.extra)
			_, err := Parse([]byte(data))
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("accepted:\n%s", data)
			}
			for _, e := range errs {
				if e.Key == tc.key && strings.Contains(e.Msg, tc.text) {
					return
				}
			}
			t.Fatalf("want %s mentioning %q, got:\n%v", tc.key, tc.text, err)
		})
	}
}

// mergeTOML appends extra's keys into the matching tables of base (TOML
// forbids repeating a table header).
func mergeTOML(base, extra string) string {
	lines := strings.Split(strings.TrimSpace(extra), "\n")
	header := lines[0]
	if strings.HasPrefix(header, "[[") || !strings.Contains(base, header+"\n") {
		return base + "\n" + extra + "\n"
	}
	body := strings.Join(lines[1:], "\n")
	// Later keys of the same name replace earlier ones: drop them from base.
	out := base
	for _, l := range lines[1:] {
		if k, _, ok := strings.Cut(l, "="); ok {
			k = strings.TrimSpace(k)
			var kept []string
			for _, bl := range strings.Split(out, "\n") {
				if bk, _, ok := strings.Cut(bl, "="); ok && strings.TrimSpace(bk) == k {
					continue
				}
				kept = append(kept, bl)
			}
			out = strings.Join(kept, "\n")
		}
	}
	rest := strings.Join(strings.Split(body, "\n")[0:], "\n")
	if i := strings.Index(rest, "\n["); i >= 0 {
		return strings.Replace(out, header+"\n", header+"\n"+rest[:i]+"\n", 1) + rest[i:] + "\n"
	}
	return strings.Replace(out, header+"\n", header+"\n"+rest+"\n", 1)
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := Parse([]byte(minimal))
	noEnv := func(string) string { return "" }
	path := filepath.Join(dir, "merchant.key")
	cfg.Gateway.KeyFile = path
	if _, _, err := cfg.LoadKey(noEnv); err == nil {
		t.Fatal("missing key file accepted")
	}
	os.WriteFile(path, []byte("SECRETKEY123\n"), 0o644)
	_, _, err := cfg.LoadKey(noEnv)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), "SECRETKEY123") {
		t.Fatalf("group-readable key file: %v", err)
	}
	os.Chmod(path, 0o640)
	if _, _, err := cfg.LoadKey(noEnv); err == nil {
		t.Fatal("group-readable key accepted")
	}
	os.Chmod(path, 0o600)
	key, source, err := cfg.LoadKey(noEnv)
	if err != nil || key != "SECRETKEY123" || source != path {
		t.Fatalf("%q %q %v", key, source, err)
	}
	os.WriteFile(path, []byte("  \n"), 0o600)
	if _, _, err := cfg.LoadKey(noEnv); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty key: %v", err)
	}
	// The systemd credential wins over the file.
	creds := t.TempDir()
	os.WriteFile(filepath.Join(creds, CredentialName), []byte("CREDKEY0\n"), 0o400)
	key, source, err = cfg.LoadKey(func(k string) string {
		if k == "CREDENTIALS_DIRECTORY" {
			return creds
		}
		return ""
	})
	if err != nil || key != "CREDKEY0" || !strings.Contains(source, "credential") {
		t.Fatalf("credential: %q %q %v", key, source, err)
	}
	cfg.Gateway.KeyFile = ""
	if _, _, err := cfg.LoadKey(noEnv); err == nil || !strings.Contains(err.Error(), "LoadCredential") {
		t.Fatalf("no key at all: %v", err)
	}
}

func TestCheckDevices(t *testing.T) {
	cfg, _ := Parse([]byte(minimal))
	cfg.Journal.Path = filepath.Join(t.TempDir(), "j.db")
	errs := cfg.CheckDevices()
	if len(errs) != 1 || errs[0].Key != "scanner.device" || !strings.Contains(errs[0].Error(), "does not exist") {
		t.Fatalf("%v", errs)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	data, _ := os.ReadFile("../deploy/scanpay.toml")
	f.Add(data)
	f.Add([]byte("[terminal]\nmax_amount = 1e3\n"))
	f.Add([]byte("[terminal]\nmax_amount = -1\n[gateway]\npoll_interval = \"0.001s\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if cfg.Terminal.MaxAmount < 1 || cfg.Gateway.PollAttempts < 1 || cfg.Gateway.PollInterval.Duration < 100*time.Millisecond {
			t.Fatalf("accepted invalid config %+v", cfg)
		}
	})
}

// The real worst case of a sale, not the nominal polling window, decides
// whether a cash register would give up first.
func TestSaleDurationFormula(t *testing.T) {
	g := Default().Gateway
	// 30 s + 30 × (2 s + 30 s) is 16.5 min; the 90 s cap bounds it.
	if got := SaleDuration(g); got != 90*time.Second {
		t.Fatalf("default sale duration %v", got)
	}
	g.SaleLimit.Duration = time.Hour
	if got := SaleDuration(g); got != 990*time.Second {
		t.Fatalf("uncapped sale duration %v, want timeout + attempts × (interval + timeout)", got)
	}
	g.Timeout.Duration, g.PollAttempts, g.PollInterval.Duration = 2*time.Second, 10, time.Second
	if got := SaleDuration(g); got != 32*time.Second {
		t.Fatalf("short polling %v", got)
	}
}

func TestWarnings(t *testing.T) {
	cfg, err := Parse([]byte(mergeTOML(minimal, "[ecr]\nlisten = \"0.0.0.0:8800\"\nallow_from = [\"192.168.1.0/24\"]\n[terminal]\nrequire_clock_sync = false")))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(cfg.Warnings(), "\n")
	if !strings.Contains(w, "ecr.listen") || !strings.Contains(w, "require_clock_sync") {
		t.Fatalf("warnings: %s", w)
	}
	cfg, _ = Parse([]byte(mergeTOML(minimal, "[ecr]\nlisten = \"127.0.0.1:8800\"")))
	if w := cfg.Warnings(); len(w) != 0 {
		t.Fatalf("loopback listen warned: %v", w)
	}
	if p, err := ParseNetwork("192.168.1.7"); err != nil || p.String() != "192.168.1.7/32" {
		t.Fatalf("single address: %v %v", p, err)
	}
	if p, err := ParseNetwork("10.1.2.3/8"); err != nil || p.String() != "10.0.0.0/8" {
		t.Fatalf("network: %v %v", p, err)
	}
}
