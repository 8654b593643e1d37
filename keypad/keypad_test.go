package keypad

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/input"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a call-recording Sink.
type recorder struct{ calls []string }

func (r *recorder) Typing(_ context.Context, a int64) error {
	r.calls = append(r.calls, fmt.Sprintf("typing %d", a))
	return nil
}
func (r *recorder) Confirm(_ context.Context, a int64) error {
	r.calls = append(r.calls, fmt.Sprintf("confirm %d", a))
	return nil
}
func (r *recorder) Cancel(context.Context) error { r.calls = append(r.calls, "cancel"); return nil }

// keys turns a script into key codes: digits, B (backspace), E (enter),
// X (escape), . (keypad dot).
func keys(script string) []uint16 {
	kp := map[rune]uint16{'0': input.KeyKP0, '1': input.KeyKP1, '2': input.KeyKP2, '3': input.KeyKP3, '4': input.KeyKP4,
		'5': input.KeyKP5, '6': input.KeyKP6, '7': input.KeyKP7, '8': input.KeyKP8, '9': input.KeyKP9,
		'B': input.KeyBackspace, 'E': input.KeyKPEnter, 'X': input.KeyEsc, '.': input.KeyKPDot}
	var out []uint16
	for _, r := range script {
		out = append(out, kp[r])
	}
	return out
}

func TestEntries(t *testing.T) {
	tests := []struct {
		name, script string
		cfg          Config
		want         string
	}{
		{"typing", "2865E", Config{}, "typing 2,typing 28,typing 286,typing 2865,confirm 2865"},
		{"correcting", "299B5E", Config{}, "typing 2,typing 29,typing 299,typing 29,typing 295,confirm 295"},
		{"backspace to empty", "1BBE", Config{}, "typing 1,typing 0,typing 0"},
		{"cancelling", "12X3E", Config{}, "typing 1,typing 12,cancel,typing 3,confirm 3"},
		{"leading zero refused", "005E", Config{}, "typing 5,confirm 5"},
		{"zero amount refused", "E", Config{}, ""},
		// A digit past the maximum is shown; Enter is held (the limit shown
		// again) until the amount is corrected: never the amount before the
		// digit, charged by surprise.
		{"over the limit holds Enter", "100001E", Config{MaxAmount: 10000}, "typing 1,typing 10,typing 100,typing 1000,typing 10000,typing 100001,typing 100001"},
		{"over the limit corrected", "99999EBE", Config{MaxAmount: 10000}, "typing 9,typing 99,typing 999,typing 9999,typing 99999,typing 99999,typing 9999,confirm 9999"},
		{"at the limit", "10000E", Config{MaxAmount: 10000}, "typing 1,typing 10,typing 100,typing 1000,typing 10000,confirm 10000"},
		{"digit limit", "123456789E", Config{MaxDigits: 4}, "typing 1,typing 12,typing 123,typing 1234,confirm 1234"},
		{"dot ignored", "1.5E", Config{}, "typing 1,typing 15,confirm 15"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			ed := NewEditor(tc.cfg)
			for _, k := range keys(tc.script) {
				Feed(context.Background(), ed, k, rec, zaptest.NewLogger(t))
			}
			if got := strings.Join(rec.calls, ","); got != tc.want {
				t.Fatalf("got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestRecordedStream replays a recorded keypad session (fakescanner
// --events, keypad Enter) through the editor.
func TestRecordedStream(t *testing.T) {
	for _, f := range []struct {
		path   string
		layout input.Layout
	}{{"testdata/amounts-64.ev", input.Layout64}, {"testdata/amounts-32.ev", input.Layout32}} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := input.ReadEvents(bytes.NewReader(data), f.layout)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{}
		ed := NewEditor(Config{MaxAmount: 100000})
		for _, ev := range evs {
			if ev.Type == input.EvKey && ev.Value == input.KeyPressed {
				Feed(context.Background(), ed, ev.Code, rec, zaptest.NewLogger(t))
			}
		}
		var confirms []string
		for _, c := range rec.calls {
			if strings.HasPrefix(c, "confirm") {
				confirms = append(confirms, c)
			}
		}
		// The third entry types one digit past the $1,000.00 limit: it is
		// shown, and Enter is held rather than charging $1,000.00.
		if got := strings.Join(confirms, ","); got != "confirm 2865,confirm 1051" {
			t.Fatalf("%s: %s", f.path, got)
		}
		if last := rec.calls[len(rec.calls)-1]; last != "typing 1000001" {
			t.Fatalf("%s: Enter over the limit gave %q", f.path, last)
		}
	}
}

func FuzzEditor(f *testing.F) {
	f.Add([]byte{input.KeyKP2, input.KeyKP8, input.KeyKPEnter})
	f.Add([]byte{input.KeyKP0, input.KeyBackspace, input.KeyEsc, input.KeyKPEnter})
	f.Add(bytes.Repeat([]byte{input.KeyKP9}, 40))
	f.Fuzz(func(t *testing.T, codes []byte) {
		ed := NewEditor(Config{MaxAmount: 50000, MaxDigits: 6})
		for _, c := range codes {
			e, _ := ed.Key(uint16(c))
			if e.Amount < 0 || e.Amount > 999999 || ed.Amount() > 999999 {
				t.Fatalf("amount %d past the digit limit", e.Amount)
			}
			if e.Kind == Confirm && (e.Amount <= 0 || e.Amount > 50000) {
				t.Fatalf("confirmed %d", e.Amount)
			}
		}
	})
}

func TestKeypadRetriesMissingDevice(t *testing.T) {
	// 30 ms of retries on synctest's clock.
	synctest.Test(t, func(t *testing.T) {
		k := &Keypad{Device: input.DeviceSpec{Path: "/nonexistent/event9"}, Backoff: device.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}, Logger: zaptest.NewLogger(t)}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if err := k.Run(ctx, &recorder{}); err != nil {
			t.Fatal(err)
		}
	})
}
