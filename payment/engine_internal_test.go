package payment

import (
	"errors"
	"testing"
)

func TestLaneTransitions(t *testing.T) {
	valid := [][2]State{
		{StateStarting, StateIdle}, {StateStarting, StatePolling}, {StateIdle, StateAwaitingCode},
		{StateAwaitingCode, StateIdle}, {StateAwaitingCode, StateSubmitting}, {StateSubmitting, StatePolling},
		{StateSubmitting, StateIdle}, {StatePolling, StateIdle}, {StatePolling, StatePolling}, {StateIdle, StateStopped},
	}
	for _, m := range valid {
		if err := checkMove(m[0], m[1]); err != nil {
			t.Errorf("%s → %s refused: %v", m[0], m[1], err)
		}
	}
	invalid := [][2]State{
		{StateIdle, StateSubmitting}, {StateIdle, StatePolling}, {StateStarting, StateAwaitingCode},
		{StateAwaitingCode, StatePolling}, {StatePolling, StateAwaitingCode}, {StateSubmitting, StateAwaitingCode},
	}
	for _, m := range invalid {
		var e InvalidTransitionError
		if err := checkMove(m[0], m[1]); !errors.As(err, &e) {
			t.Errorf("%s → %s allowed", m[0], m[1])
		}
	}
	if StateAwaitingCode.String() != "AWAITING_CODE" || State(42).String() != "State(42)" {
		t.Error("state names")
	}
}

func TestOrderNumbers(t *testing.T) {
	seen := map[string]bool{}
	const draws = 1000
	for i := 0; i < draws; i++ {
		// Same counter every time, as after a lost journal: the random
		// suffix still keeps numbers apart.
		n := OrderNumber("ABCDEFGHIJKL", 1)
		if len(n) > 30 {
			t.Fatalf("%q is %d characters", n, len(n))
		}
		seen[n] = true
	}
	// 31^5 suffixes: a pair among 1000 draws repeats now and then (about
	// one run in sixty), which a lost journal never asks of them (each
	// counter value was used once before); ten repeats would mean the
	// suffix is not random (odds below 1e-20).
	if dup := draws - len(seen); dup >= 10 {
		t.Fatalf("%d of %d order numbers repeated after a counter reset", dup, draws)
	}
	if n := OrderNumber("ABCDEFGHIJKL", 9999999999); len(n) > 30 {
		t.Fatalf("%q too long", n)
	}
	if n := RefundNumber("ABCDEFGHIJKL", 999999); len(n) > 30 {
		t.Fatalf("%q too long", n)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []func(*Config){
		func(c *Config) { c.TerminalID = "" },
		func(c *Config) { c.TerminalID = "has space" },
		func(c *Config) { c.TerminalID = "ABCDEFGHIJKLM" },
		func(c *Config) { c.Currency = "EUR" },
		func(c *Config) { c.MaxAmount = 0 },
		func(c *Config) { c.PollAttempts = 0 },
		func(c *Config) { c.PollInterval = 0 },
		func(c *Config) { c.ReconcileMax = c.ReconcileMin / 2 },
	}
	for i, f := range bad {
		c := DefaultConfig()
		f(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestMailbox(t *testing.T) {
	latest := newMailbox[int](1)
	for i := 1; i <= 3; i++ {
		latest.put(i)
	}
	if v, _ := latest.take(); v != 3 {
		t.Fatalf("latest-wins kept %d", v)
	}
	bounded := newMailbox[int](2)
	bounded.put(1)
	bounded.put(2)
	if bounded.put(3) {
		t.Fatal("bounded mailbox took a third item")
	}
	queue := newMailbox[int](0)
	for i := 0; i < 100; i++ {
		queue.put(i)
	}
	queue.close()
	for i := 0; i < 100; i++ {
		if v, ok := queue.take(); !ok || v != i {
			t.Fatalf("item %d: %d %v", i, v, ok)
		}
	}
	if _, ok := queue.take(); ok {
		t.Fatal("closed, drained mailbox returned an item")
	}
}
