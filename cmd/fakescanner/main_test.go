package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/scanpay/scanpay/device/input"
	"github.com/scanpay/scanpay/scanner"
)

func TestParseReplay(t *testing.T) {
	steps, err := parseReplay(strings.NewReader("# a session\n134567890123456789\n\npause 1.5s\n  2812345678901234  \n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 3 || steps[0].code != "134567890123456789" || steps[1].pause != 1500*time.Millisecond || steps[2].code != "2812345678901234" {
		t.Fatalf("steps %+v", steps)
	}
	for _, bad := range []string{"pause soon\n", "pause -1s\n", "12 34\n"} {
		if _, err := parseReplay(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestEventsDecodeBack(t *testing.T) {
	for _, layout := range []string{"64", "32"} {
		path := filepath.Join(t.TempDir(), "out.ev")
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"--events", path, "--layout", layout, "--terminator", "kpenter", "AbC123", "134567890123456789"}, &out, &errb)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		data, _ := os.ReadFile(path)
		l, _ := input.ParseLayout(layout)
		evs, err := input.ReadEvents(bytes.NewReader(data), l)
		if err != nil {
			t.Fatal(err)
		}
		got := scanner.DecodeStream(evs, scanner.NewDecoder(scanner.DecoderConfig{}))
		if strings.Join(got, ",") != "AbC123,134567890123456789" {
			t.Fatalf("layout %s decoded %q", layout, got)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},                                  // no mode
		{"--uinput", "--serial", "/x", "1"}, // two modes
		{"--events", "-"},                   // no codes
		{"--events", "-", "--terminator", "space", "1"},
		{"--events", "-", "é"}, // not typeable
		{"--events", "-", "--layout", "16", "1"},
		{"--serial", "/x", "--line-ending", "rs", "1"},
		{"--uinput", "--id", "1eab", "1"},      // no product
		{"--uinput", "--id", "1eab:82g3", "1"}, // not hex
		{"--uinput", "--id", "10000:1", "1"},   // over 16 bits
	} {
		var out bytes.Buffer
		if code := run(context.Background(), args, &out, &out); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, &out); code != 0 || !strings.Contains(out.String(), "--uinput") {
		t.Fatalf("help: %d %s", code, out.String())
	}
}

func TestSerialToPty(t *testing.T) {
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer s.Close()
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--serial", s.Name(), "--line-ending", "crlf", "--gap", "1ms", "134567890123456789", "2812345678901234"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if strings.Contains(out.String(), "134567890123456789") {
		t.Fatal("full code printed")
	}
	r := bufio.NewReader(m)
	for _, want := range []string{"134567890123456789\r\n", "2812345678901234\r\n"} {
		line, err := r.ReadString('\n')
		if err != nil || line != want {
			t.Fatalf("read %q %v, want %q", line, err, want)
		}
	}
}
