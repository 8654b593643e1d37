package scanner

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/input"
)

var sessionCodes = []string{"134567890123456789", "2812345678901234", "6212345678901234567", "AbC-123_xyz", "301234567890123456789012"}

func TestRecordedStreams(t *testing.T) {
	for _, tc := range []struct {
		file   string
		layout input.Layout
	}{{"testdata/session-64.ev", input.Layout64}, {"testdata/session-32.ev", input.Layout32}} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			evs, err := input.ReadEvents(bytes.NewReader(b), tc.layout)
			if err != nil {
				t.Fatal(err)
			}
			got := DecodeStream(evs, NewDecoder(DecoderConfig{StripAIM: true}))
			if strings.Join(got, ",") != strings.Join(sessionCodes, ",") {
				t.Fatalf("decoded %q, want %q", got, sessionCodes)
			}
			raw := DecodeStream(evs, NewDecoder(DecoderConfig{}))
			if raw[3] != "]Q1AbC-123_xyz" {
				t.Fatalf("without AIM stripping: %q", raw[3])
			}
			// A scanner types about 10 ms per key: check the recording's
			// timestamps survived the layout.
			if d := evs[len(evs)-1].Time.Sub(evs[0].Time); d < 2*time.Second || d > 10*time.Second {
				t.Fatalf("recording spans %v", d)
			}
		})
	}
	// The 16-byte recording read as 24-byte records does not line up.
	b, _ := os.ReadFile("testdata/session-32.ev")
	if _, err := input.ReadEvents(bytes.NewReader(b), input.Layout64); !errors.Is(err, input.ErrTruncatedEvent) {
		if len(b)%24 != 0 {
			t.Fatalf("misaligned stream read without error: %v", err)
		}
	}
}

// keys builds press/release events for s, each key 10 ms apart from start.
func keys(t0 time.Time, s string, term uint16) []input.RawEvent {
	evs, err := input.TypeCode(s, term, t0, 10*time.Millisecond)
	if err != nil {
		panic(err)
	}
	return evs
}

func TestDecoder(t *testing.T) {
	t0 := time.Unix(1000, 0)
	press := func(code uint16, at time.Duration) input.RawEvent {
		return input.RawEvent{Time: t0.Add(at), Type: input.EvKey, Code: code, Value: input.KeyPressed}
	}
	release := func(code uint16, at time.Duration) input.RawEvent {
		return input.RawEvent{Time: t0.Add(at), Type: input.EvKey, Code: code, Value: input.KeyReleased}
	}
	cat := func(parts ...[]input.RawEvent) []input.RawEvent {
		var out []input.RawEvent
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name  string
		cfg   DecoderConfig
		evs   []input.RawEvent
		want  []string
		stats DecodeStats
	}{
		{"plain", DecoderConfig{}, keys(t0, "134567890123456789", input.KeyEnter), []string{"134567890123456789"}, DecodeStats{Codes: 1}},
		{"keypad enter", DecoderConfig{}, keys(t0, "12", input.KeyKPEnter), []string{"12"}, DecodeStats{Codes: 1}},
		{"tab not a terminator by default", DecoderConfig{}, cat(keys(t0, "12", input.KeyTab), keys(t0.Add(time.Second), "3", input.KeyEnter)), []string{"3"}, DecodeStats{Codes: 1, Partial: 1, Unmapped: 1}},
		{"tab configured", DecoderConfig{Terminators: []uint16{input.KeyTab}}, keys(t0, "12", input.KeyTab), []string{"12"}, DecodeStats{Codes: 1}},
		{"shift letters", DecoderConfig{}, keys(t0, "AbC", input.KeyEnter), []string{"AbC"}, DecodeStats{Codes: 1}},
		{"caps lock", DecoderConfig{}, []input.RawEvent{press(input.KeyCapsLock, 0), press(30, 10*time.Millisecond), press(2, 20*time.Millisecond), press(input.KeyEnter, 30*time.Millisecond)}, []string{"A1"}, DecodeStats{Codes: 1}},
		{"caps and shift cancel on letters", DecoderConfig{}, []input.RawEvent{press(input.KeyCapsLock, 0), press(input.KeyRightShift, 5*time.Millisecond), press(30, 10*time.Millisecond), release(input.KeyRightShift, 15*time.Millisecond), press(input.KeyEnter, 20*time.Millisecond)}, []string{"a"}, DecodeStats{Codes: 1}},
		{"repeats ignored", DecoderConfig{}, []input.RawEvent{press(2, 0), {Time: t0.Add(5 * time.Millisecond), Type: input.EvKey, Code: 2, Value: input.KeyRepeated}, press(input.KeyEnter, 10*time.Millisecond)}, []string{"1"}, DecodeStats{Codes: 1}},
		{"keypad digits", DecoderConfig{}, []input.RawEvent{press(input.KeyKP1, 0), press(input.KeyKP0, 10*time.Millisecond), press(input.KeyKPEnter, 20*time.Millisecond)}, []string{"10"}, DecodeStats{Codes: 1}},
		{"idle gap drops partial", DecoderConfig{IdleTimeout: 300 * time.Millisecond}, cat(keys(t0, "999", input.KeyEnter)[:6], keys(t0.Add(time.Second), "55", input.KeyEnter)), []string{"55"}, DecodeStats{Codes: 1, Partial: 1}},
		{"overlong discarded to terminator", DecoderConfig{MaxLen: 5}, cat(keys(t0, "1234567", input.KeyEnter), keys(t0.Add(time.Second), "12", input.KeyEnter)), []string{"12"}, DecodeStats{Codes: 1, Overlong: 1}},
		{"exactly max length", DecoderConfig{MaxLen: 5}, keys(t0, "12345", input.KeyEnter), []string{"12345"}, DecodeStats{Codes: 1}},
		{"empty terminator", DecoderConfig{}, []input.RawEvent{press(input.KeyEnter, 0)}, nil, DecodeStats{Empty: 1}},
		{"unmapped keys ignored", DecoderConfig{}, []input.RawEvent{press(2, 0), press(input.KeyNumLock, 5*time.Millisecond), press(3, 10*time.Millisecond), press(input.KeyEnter, 20*time.Millisecond)}, []string{"12"}, DecodeStats{Codes: 1, Unmapped: 1}},
		{"non-key events ignored", DecoderConfig{}, append([]input.RawEvent{{Time: t0, Type: input.EvMsc, Code: 4, Value: 458782}}, keys(t0, "7", input.KeyEnter)...), []string{"7"}, DecodeStats{Codes: 1}},
		{"AIM prefix only", DecoderConfig{StripAIM: true}, keys(t0, "]E0", input.KeyEnter), nil, DecodeStats{Empty: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder(tc.cfg)
			got := DecodeStream(tc.evs, d)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("codes %q, want %q", got, tc.want)
			}
			if d.Stats != tc.stats {
				t.Fatalf("stats %+v, want %+v", d.Stats, tc.stats)
			}
		})
	}
}

func TestTenKilobytesOfKeys(t *testing.T) {
	d := NewDecoder(DecoderConfig{})
	long := strings.Repeat("1234567890", 1000)
	evs := keys(time.Unix(0, 0), long, input.KeyEnter)
	evs = append(evs, keys(time.Unix(1, 0).Add(100*time.Second), "42", input.KeyEnter)...)
	got := DecodeStream(evs, d)
	if len(got) != 1 || got[0] != "42" || d.Stats.Overlong != 1 {
		t.Fatalf("got %q stats %+v", got, d.Stats)
	}
}

func TestStripAIM(t *testing.T) {
	for in, want := range map[string]string{"]Q1abc": "abc", "]E0123": "123", "]Q": "]Q", "abc": "abc", "]!1x": "]!1x", "": ""} {
		if got := StripAIM(in); got != want {
			t.Errorf("StripAIM(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzDecoder(f *testing.F) {
	for _, file := range []string{"testdata/session-64.ev"} {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b[:min(len(b), 2400)])
		}
	}
	var b bytes.Buffer
	for _, ev := range keys(time.Unix(0, 0), "AbC123", input.KeyEnter) {
		b.Write(input.Layout64.Encode(ev))
	}
	f.Add(b.Bytes())
	f.Add(bytes.Repeat([]byte{1, 0, 0, 0}, 50))
	f.Fuzz(func(t *testing.T, data []byte) {
		evs, _ := input.ReadEvents(bytes.NewReader(data), input.Layout64)
		d := NewDecoder(DecoderConfig{MaxLen: 32, StripAIM: true})
		for _, code := range DecodeStream(evs, d) {
			if code == "" || len([]rune(code)) > 32 {
				t.Fatalf("bad code %q", code)
			}
			if device.Printable(code) != code {
				t.Fatalf("control character in %q", code)
			}
		}
	})
}

// BenchmarkDecoder reports how many key events per second the decoder
// handles; a scanner sends at most a few thousand per second.
func BenchmarkDecoder(b *testing.B) {
	data, err := os.ReadFile("testdata/session-64.ev")
	if err != nil {
		b.Fatal(err)
	}
	evs, _ := input.ReadEvents(bytes.NewReader(data), input.Layout64)
	b.ReportAllocs()
	d := NewDecoder(DecoderConfig{StripAIM: true})
	n := 0
	for b.Loop() {
		d.Reset()
		n += len(DecodeStream(evs, d))
	}
	b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "events/s")
	if n == 0 {
		b.Fatal("no codes")
	}
}
